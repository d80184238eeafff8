package tokenserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/store"
)

const (
	sessionCookieName = "kubeoauth_session"
	loginLifetime     = 12 * time.Hour
	// anonymousLifetime bounds a session that never signed in: long enough to fill in
	// the login form after a coffee break.
	anonymousLifetime = 24 * time.Hour
)

// browserSession is the signed session cookie every page visitor gets. Its random ID
// is what CSRF tokens are bound to; Subject is set once the visitor signs in, with a
// fingerprint of their password hash at that moment. An anonymous session holds no
// server state; a signed-in one also has a row in the database (sign_in_sessions,
// keyed by a hash of the ID), which sign-out ends for every replica at once.
type browserSession struct {
	ID, Subject, Fingerprint string
	// At is when the session started, or when the user signed in.
	At time.Time
}

// sessionCookie is the cookie's name: __Host- under https, so a sibling subdomain
// can neither set nor overwrite it (the browser takes such a cookie only from this
// exact host, Secure, with Path=/ and no Domain). Plain http, for loopback
// development, cannot have the prefix.
func (s *Server) sessionCookie() string {
	if s.cfg.SecureCookies {
		return "__Host-" + sessionCookieName
	}
	return sessionCookieName
}

// cookieMAC signs session cookies with a key derived from the shared HMAC secret, so
// any replica accepts a session made on another.
func (s *Server) cookieMAC(value string) string {
	m := hmac.New(sha256.New, append([]byte("kubeoauth-login-cookie:"), s.cfg.CookieSecret...))
	m.Write([]byte(value))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// readSession returns the request's session if its cookie is ours and not expired.
func (s *Server) readSession(r *http.Request) (browserSession, bool) {
	c, err := r.Cookie(s.sessionCookie())
	if err != nil {
		return browserSession{}, false
	}
	payload, mac, ok := strings.Cut(c.Value, ".")
	if !ok || subtle.ConstantTimeCompare([]byte(mac), []byte(s.cookieMAC(payload))) != 1 {
		return browserSession{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return browserSession{}, false
	}
	f := strings.Split(string(raw), "\x00")
	if len(f) != 4 || len(f[0]) < 20 {
		return browserSession{}, false
	}
	unix, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return browserSession{}, false
	}
	bs := browserSession{ID: f[0], Subject: f[1], At: time.Unix(unix, 0), Fingerprint: f[3]}
	lifetime := anonymousLifetime
	if bs.Subject != "" {
		lifetime = loginLifetime
	}
	if time.Since(bs.At) > lifetime {
		return browserSession{}, false
	}
	return bs, true
}

// writeSession sets the session cookie: HttpOnly, SameSite=Lax, Secure whenever the
// issuer is https.
func (s *Server) writeSession(w http.ResponseWriter, bs browserSession) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(bs.ID + "\x00" + bs.Subject + "\x00" +
		strconv.FormatInt(bs.At.Unix(), 10) + "\x00" + bs.Fingerprint))
	lifetime := anonymousLifetime
	if bs.Subject != "" {
		lifetime = loginLifetime
	}
	// #nosec G124 -- Secure follows the issuer's scheme
	http.SetCookie(w, &http.Cookie{Name: s.sessionCookie(), Value: payload + "." + s.cookieMAC(payload), Path: "/",
		HttpOnly: true, Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: int(lifetime.Seconds())})
}

// newSession starts an anonymous session with a fresh ID; a sign-in or sign-out
// always gets a new ID, so a session ID (and its CSRF token) planted or seen
// before is worth nothing after.
func (s *Server) newSession(w http.ResponseWriter) browserSession {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	bs := browserSession{ID: base64.RawURLEncoding.EncodeToString(b), At: time.Now()}
	s.writeSession(w, bs)
	return bs
}

// session returns the request's session, starting an anonymous one when there is
// none, for pages that show a form.
func (s *Server) session(w http.ResponseWriter, r *http.Request) browserSession {
	if bs, ok := s.readSession(r); ok {
		return bs
	}
	return s.newSession(w)
}

// loggedIn returns the signed-in subject and when they signed in; see signedIn.
func (s *Server) loggedIn(r *http.Request) (string, time.Time, bool, error) {
	u, ok, err := s.signedIn(r)
	return u.Subject, u.At, ok, err
}

// signedInUser is who a browser's session signed in, with what the token server
// knows of them for the claims.
type signedInUser struct {
	Subject string
	// At is when the session here started; AuthTime is when the user last
	// authenticated: the same for a password, the provider's auth_time (when it
	// said) for a user of the upstream provider, whose single sign-on may be older.
	At, AuthTime time.Time
	// Identity comes from the users file for its users and from the sign-in session
	// for a user of the upstream provider; nil when there is nothing to say.
	Identity *oauth.Identity
}

// display is how the pages name the user: the username, which for a user of the
// upstream provider is not the subject.
func (u signedInUser) display() string {
	if u.Identity != nil && u.Identity.Username != "" {
		return u.Identity.Username
	}
	return u.Subject
}

// signedIn returns the signed-in user. A session whose user is gone from the users
// file, or whose password hash changed since, is signed out; so is an upstream
// user's session once the upstream settings changed or went away, and one whose
// stored row has ended (sign-out, on any replica) or is gone. The row is read from
// the database on every call; an error reading it is returned, so that the page
// answers 503 and never takes the visitor for signed in.
func (s *Server) signedIn(r *http.Request) (signedInUser, bool, error) {
	bs, ok := s.readSession(r)
	if !ok || bs.Subject == "" {
		return signedInUser{}, false, nil
	}
	var hash []byte
	if isUpstreamSubject(bs.Subject) {
		if s.upstream == nil {
			return signedInUser{}, false, nil
		}
		hash = s.upstream.key
	} else {
		var known bool
		if hash, known = s.cfg.Users.current().hashes[bs.Subject]; !known {
			return signedInUser{}, false, nil
		}
	}
	if subtle.ConstantTimeCompare([]byte(bs.Fingerprint), []byte(s.fingerprint(bs.Subject, hash))) != 1 {
		return signedInUser{}, false, nil
	}
	stored, err := s.cfg.Store.GetSignInSession(r.Context(), storedSessionID(bs.ID))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return signedInUser{}, false, nil
	case err != nil:
		return signedInUser{}, false, err
	case stored.Subject != bs.Subject:
		return signedInUser{}, false, nil
	}
	u := signedInUser{Subject: bs.Subject, At: bs.At, AuthTime: bs.At}
	if !isUpstreamSubject(bs.Subject) {
		u.Identity = s.identity(bs.Subject)
		return u, true, nil
	}
	var id upstreamSessionIdentity
	if err := json.Unmarshal(stored.Identity, &id); err != nil {
		return signedInUser{}, false, fmt.Errorf("the stored identity of a sign-in session: %w", err)
	}
	u.Identity = &id.Identity
	if id.AuthTime != 0 && id.AuthTime < bs.At.Unix() {
		u.AuthTime = time.Unix(id.AuthTime, 0)
	}
	return u, true, nil
}

// signIn starts a signed-in session for user of the users file, bound to the hash
// their password matched.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request, user string, hash []byte) error {
	return s.startSession(w, r, user, s.fingerprint(user, hash), nil)
}

// startSession starts a signed-in session for subject: a fresh ID, stored before
// the cookie is set, so that sign-out has a row to end. A signed-in session the
// browser had before is ended first, so that a copy of its cookie dies with it.
// identity is kept with the row (upstream users).
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, subject, fingerprint string, identity []byte) error {
	ctx := r.Context()
	if old, ok := s.readSession(r); ok && old.Subject != "" {
		if err := s.cfg.Store.EndSignInSession(ctx, storedSessionID(old.ID)); err != nil {
			return err
		}
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	bs := browserSession{ID: base64.RawURLEncoding.EncodeToString(b), Subject: subject, Fingerprint: fingerprint, At: time.Now()}
	if err := s.cfg.Store.CreateSignInSession(ctx, &store.SignInSession{ID: storedSessionID(bs.ID), Subject: subject,
		CreatedAt: bs.At, ExpiresAt: bs.At.Add(loginLifetime), Identity: identity}); err != nil {
		return err
	}
	s.writeSession(w, bs)
	return nil
}

// signOut ends the request's signed-in session in the database, for every replica
// and every copy of the cookie.
func (s *Server) signOut(r *http.Request) error {
	bs, ok := s.readSession(r)
	if !ok || bs.Subject == "" {
		return nil
	}
	return s.cfg.Store.EndSignInSession(r.Context(), storedSessionID(bs.ID))
}

// storedSessionID is what the database keeps of a session ID: its SHA-256, so that
// reading the table gives no one a session ID (the IDs are 192 random bits, so an
// unsalted hash cannot be reversed).
func storedSessionID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// csrfToken is the CSRF token of a session: a MAC of its ID. A form is accepted only
// with the token of the session that sent it, which a page elsewhere can neither read
// nor, with the session cookie out of its reach, choose.
func (s *Server) csrfToken(bs browserSession) string {
	m := hmac.New(sha256.New, append([]byte("kubeoauth-csrf:"), s.cfg.CookieSecret...))
	m.Write([]byte(bs.ID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// csrfOK checks a posted form's token against the request's session.
func (s *Server) csrfOK(r *http.Request) bool {
	bs, ok := s.readSession(r)
	return ok && subtle.ConstantTimeCompare([]byte(s.csrfToken(bs)), []byte(r.PostForm.Get("csrf"))) == 1
}
