package tokenserver

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.ParseFS(templateFS, "templates/*.html"))

const (
	sessionCookie = "kubeoauth_session"
	csrfCookie    = "kubeoauth_csrf"
	loginLifetime = 12 * time.Hour
)

// LoadUsers reads a users file: one "username:bcrypt-hash" per line, # comments
// allowed (the format of `htpasswd -B`). The operator mounts it from a Secret.
func LoadUsers(path string) (map[string][]byte, error) {
	f, err := os.Open(path) // #nosec G304 -- the operator's mounted users file
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s line %d: want username:bcrypt-hash", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%s line %d (%s): not a bcrypt hash: %w", path, n, name, err)
		}
		users[name] = []byte(hash)
	}
	return users, sc.Err()
}

// cookieMAC signs login cookies with a key derived from the shared HMAC secret, so any
// replica accepts a login made on another.
func (s *Server) cookieMAC(value string) string {
	m := hmac.New(sha256.New, append([]byte("kubeoauth-login-cookie:"), s.cfg.CookieSecret...))
	m.Write([]byte(value))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func browserConsent(clientID, subject string, scopes []string) *store.ConsentGrant {
	return &store.ConsentGrant{ClientID: clientID, Subject: subject, Scopes: scopes, Source: store.SourceBrowser}
}

// setCookie sets an HttpOnly, SameSite=Lax cookie, Secure whenever the issuer is https
// (plain http is for loopback development only).
func (s *Server) setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	// #nosec G124 -- Secure follows the issuer's scheme
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: s.cfg.SecureCookies,
		SameSite: http.SameSiteLaxMode, MaxAge: int(maxAge.Seconds())})
}

// loggedIn returns the signed-in subject and when they signed in.
func (s *Server) loggedIn(r *http.Request) (string, time.Time, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", time.Time{}, false
	}
	payload, mac, ok := strings.Cut(c.Value, ".")
	if !ok || subtle.ConstantTimeCompare([]byte(mac), []byte(s.cookieMAC(payload))) != 1 {
		return "", time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return "", time.Time{}, false
	}
	subject, at, _ := strings.Cut(string(raw), "\x00")
	unix, err := strconv.ParseInt(at, 10, 64)
	authTime := time.Unix(unix, 0)
	if err != nil || time.Since(authTime) > loginLifetime {
		return "", time.Time{}, false
	}
	return subject, authTime, true
}

// csrfToken returns the request's CSRF token, setting the cookie when absent
// (double-submit: a form is accepted only when its token equals the cookie, which a
// page on another site can neither read nor set).
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	s.setCookie(w, csrfCookie, tok, 24*time.Hour)
	return tok
}

func csrfOK(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	return err == nil && c.Value != "" && subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostForm.Get("csrf"))) == 1
}

// page is what the templates see.
type page struct {
	Title, Error, CSRF, ReturnTo, Username, Subject, RedirectHost string
	Client                                                        *store.Client
	Scopes                                                        []scopeLine
	Query                                                         url.Values
	Grants                                                        []grantRow
}

type scopeLine struct{ Name, Description string }

type grantRow struct {
	ClientID, ClientName, Owner, GrantedAt, LastUsed string
	Scopes                                           []string
}

const (
	accountPath = "/account"
	signInTitle = "Sign in"
	// Pages load nothing from elsewhere; images (logos) only over https.
	contentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; " +
		"form-action 'self' http: https:; frame-ancestors 'none'"
	formExpired = "This form has expired or did not come from this site. Go back and try again."
)

func (s *Server) render(w http.ResponseWriter, code int, name string, data page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
	w.WriteHeader(code)
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		s.cfg.Log.Error("rendering page", "page", name, "err", err)
	}
}

func (s *Server) errorPage(w http.ResponseWriter, code int, msg string) {
	s.render(w, code, "error.html", page{Title: "Error", Error: msg})
}

// authorize serves the authorization endpoint: validate, sign in, ask for consent
// (unless a grant covers the request or the client is first-party), then issue the
// code. GET shows pages; POST carries the consent decision.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, http.StatusBadRequest, "The request is malformed.")
		return
	}
	p := s.cfg.Provider
	areq, err := p.ParseAuthorize(r)
	if err != nil {
		p.AuthorizeError(w, r, areq, err)
		return
	}
	subject, authTime, ok := s.loggedIn(r)
	if !ok {
		s.render(w, http.StatusOK, "login.html", page{Title: signInTitle, CSRF: s.csrfToken(w, r),
			ReturnTo: "/oauth2/auth?" + authorizeQuery(r).Encode()})
		return
	}
	ctx := r.Context()
	client, err := s.cfg.Store.GetClientByID(ctx, areq.ClientID)
	if err != nil {
		p.AuthorizeError(w, r, areq, err)
		return
	}
	if r.Method == http.MethodPost {
		if !csrfOK(r) {
			s.errorPage(w, http.StatusForbidden, formExpired)
			return
		}
		if r.PostForm.Get("decision") != "approve" {
			p.Deny(w, r, areq)
			return
		}
		g, err := s.cfg.Store.PutGrant(ctx, browserConsent(client.ID, subject, areq.Scopes))
		if err != nil {
			p.AuthorizeError(w, r, areq, err)
			return
		}
		p.Approve(w, r, areq, subject, g, authTime)
		return
	}
	grant, err := s.cfg.Store.GetGrant(ctx, client.ID, subject)
	switch {
	case err == nil && grant.Covers(areq.Scopes, time.Now()):
		_ = s.cfg.Store.TouchGrant(ctx, grant.ID, time.Now())
		p.Approve(w, r, areq, subject, grant, authTime)
		return
	case err != nil && !errors.Is(err, store.ErrNotFound):
		p.AuthorizeError(w, r, areq, err)
		return
	case client.SkipConsent:
		// First-party: the operator passes skipConsent only for namespaces the
		// platform trusts. The consent is recorded all the same, so it can be listed
		// and revoked.
		g, err := s.cfg.Store.PutGrant(ctx, browserConsent(client.ID, subject, areq.Scopes))
		if err != nil {
			p.AuthorizeError(w, r, areq, err)
			return
		}
		p.Approve(w, r, areq, subject, g, authTime)
		return
	}
	scopes := make([]scopeLine, 0, len(areq.Scopes))
	for _, sc := range areq.Scopes {
		d := s.cfg.ScopeDescriptions[sc]
		if d == "" {
			d = "Use the permission “" + sc + "”"
		}
		scopes = append(scopes, scopeLine{sc, d})
	}
	redirectHost := ""
	if u, err := url.Parse(areq.RedirectURI); err == nil {
		redirectHost = u.Host
	}
	s.render(w, http.StatusOK, "consent.html", page{
		Title: "Allow " + client.Name + "?", Client: client, Scopes: scopes, RedirectHost: redirectHost,
		Subject: subject, CSRF: s.csrfToken(w, r), Query: authorizeQuery(r),
	})
}

// authorizeQuery is the authorization request's own parameters, without our form
// fields.
func authorizeQuery(r *http.Request) url.Values {
	q := url.Values{}
	for k, v := range r.Form {
		if k != "csrf" && k != "decision" {
			q[k] = v
		}
	}
	return q
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusOK, "login.html", page{Title: signInTitle, CSRF: s.csrfToken(w, r), ReturnTo: accountPath})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, http.StatusBadRequest, "The request is malformed.")
		return
	}
	returnTo := r.PostForm.Get("return_to")
	// Only back to our own pages: an open redirect would help phishing.
	if !strings.HasPrefix(returnTo, "/oauth2/auth?") {
		returnTo = accountPath
	}
	if !csrfOK(r) {
		s.errorPage(w, http.StatusForbidden, formExpired)
		return
	}
	user := r.PostForm.Get("username")
	hash, known := s.cfg.Users[user]
	if !known {
		hash = dummyHash // the same work whether or not the user exists
	}
	if err := bcrypt.CompareHashAndPassword(hash, []byte(r.PostForm.Get("password"))); err != nil || !known {
		s.cfg.Log.Info("failed sign-in", "username", user)
		s.render(w, http.StatusUnauthorized, "login.html", page{Title: signInTitle, CSRF: s.csrfToken(w, r),
			ReturnTo: returnTo, Username: user, Error: "The username or password is wrong."})
		return
	}
	payload := base64.RawURLEncoding.EncodeToString([]byte(user + "\x00" + strconv.FormatInt(time.Now().Unix(), 10)))
	s.setCookie(w, sessionCookie, payload+"."+s.cookieMAC(payload), loginLifetime)
	http.Redirect(w, r, returnTo, http.StatusSeeOther) // #nosec G710 -- returnTo is one of our own paths, checked above
}

var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("no such user"), bcrypt.DefaultCost)

// account lists the signed-in user's connected apps.
func (s *Server) account(w http.ResponseWriter, r *http.Request) {
	subject, _, ok := s.loggedIn(r)
	if !ok {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	ctx := r.Context()
	grants, err := s.cfg.Store.ListGrants(ctx, store.GrantFilter{Subject: subject})
	if err != nil {
		s.errorPage(w, storeErrStatus(err), "Your connected apps cannot be listed right now.")
		return
	}
	rows := make([]grantRow, 0, len(grants))
	for _, g := range grants {
		c, err := s.cfg.Store.GetClientByID(ctx, g.ClientID)
		if err != nil {
			continue
		}
		owner := c.OwnerNamespace
		if c.OwnerTeam != "" {
			owner += " (says: " + c.OwnerTeam + ")"
		}
		last := "never"
		if !g.LastUsedAt.IsZero() {
			last = g.LastUsedAt.UTC().Format("2006-01-02 15:04 MST")
		}
		rows = append(rows, grantRow{ClientID: c.ID, ClientName: c.Name, Owner: owner, Scopes: g.Scopes,
			GrantedAt: g.GrantedAt.UTC().Format("2006-01-02 15:04 MST"), LastUsed: last})
	}
	s.render(w, http.StatusOK, "account.html", page{Title: "Connected apps", Subject: subject, Grants: rows, CSRF: s.csrfToken(w, r)})
}

// revokeFromAccount revokes one of the signed-in user's grants and every token under it.
func (s *Server) revokeFromAccount(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, http.StatusBadRequest, "The request is malformed.")
		return
	}
	subject, _, ok := s.loggedIn(r)
	if !ok {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	if !csrfOK(r) {
		s.errorPage(w, http.StatusForbidden, formExpired)
		return
	}
	err := s.cfg.Store.RevokeGrant(r.Context(), r.PostForm.Get("client_id"), subject)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.errorPage(w, storeErrStatus(err), "The app could not be disconnected right now; try again.")
		return
	}
	http.Redirect(w, r, accountPath, http.StatusSeeOther)
}
