package tokenserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	sessionCookieName = "kubeoauth_session"
	loginLifetime     = 12 * time.Hour
	// anonymousLifetime bounds a session that never signed in: long enough to fill in
	// the login form after a coffee break.
	anonymousLifetime = 24 * time.Hour
)

// browserSession is the signed session cookie every page visitor gets. It holds no
// server state, so any replica serves it. Its random ID is what CSRF tokens are bound
// to; Subject is set once the visitor signs in, with a fingerprint of their password
// hash at that moment.
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

// loggedIn returns the signed-in subject and when they signed in. A session whose
// user is gone from the users file, or whose password hash changed since, is signed
// out.
func (s *Server) loggedIn(r *http.Request) (string, time.Time, bool) {
	bs, ok := s.readSession(r)
	if !ok || bs.Subject == "" {
		return "", time.Time{}, false
	}
	hash, known := s.cfg.Users.current().hashes[bs.Subject]
	if !known || subtle.ConstantTimeCompare([]byte(bs.Fingerprint), []byte(s.fingerprint(bs.Subject, hash))) != 1 {
		return "", time.Time{}, false
	}
	return bs.Subject, bs.At, true
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
