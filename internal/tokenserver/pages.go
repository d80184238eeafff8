package tokenserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/pages"
	"github.com/kubeoauth/kubeoauth/internal/store"
)

func browserConsent(clientID, subject string, scopes []string) *store.ConsentGrant {
	return &store.ConsentGrant{ClientID: clientID, Subject: subject, Scopes: scopes, Source: store.SourceBrowser}
}

// page is what the templates see: internal/pages holds it, so that the operator
// checks a TokenServer's own templates against the same data.
type (
	page      = pages.Data
	scopeLine = pages.Scope
	grantRow  = pages.Grant
)

// pageClient is what the pages may show of a client: never its secret's hash.
func pageClient(c *store.Client) *pages.Client {
	if c == nil {
		return nil
	}
	return &pages.Client{ID: c.ID, Name: c.Name, LogoURI: c.LogoURI, ClientURI: c.ClientURI, PolicyURI: c.PolicyURI,
		TOSURI: c.TOSURI, OwnerNamespace: c.OwnerNamespace, OwnerTeam: c.OwnerTeam, OwnerContact: c.OwnerContact}
}

const (
	accountPath = "/account"
	signInTitle = "Sign in"
	// Pages load nothing from elsewhere but the images they show (pageCSP).
	contentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http: https:; " +
		"frame-ancestors 'none'"
	signInUnavailable = "Signing in is unavailable right now. Try again in a moment."
	formExpired       = "This form has expired or did not come from this site. Go back and try again."
	crossOrigin       = "This form was sent from another site, so it was refused. Go back to the app and start again."
)

func (s *Server) render(w http.ResponseWriter, code int, name string, data page) {
	data.Brand = s.cfg.Brand
	var buf bytes.Buffer
	if err := s.cfg.Pages.Execute(&buf, name, data); err != nil {
		// A TokenServer's own template that fails on this request: the built-in
		// error page, which says nothing of the template (the log does).
		s.cfg.Log.Error("rendering page", "page", name, "err", err)
		code, data = http.StatusInternalServerError, page{Title: "Error", Brand: s.cfg.Brand,
			Error: "This page cannot be shown right now. Try again later."}
		buf.Reset()
		_ = pages.Builtin().Execute(&buf, "error.html", data)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", pageCSP(data))
	w.WriteHeader(code)
	_, _ = buf.WriteTo(w)
}

// pageCSP is contentSecurityPolicy with the images of this page only: the logo's
// origin (or data: for an inline logo) and the https origin of the app's logo.
func pageCSP(d page) string {
	var src []string
	for _, s := range []string{d.Brand.ImageSource(), clientLogoSource(d.Client)} {
		if s != "" && !slices.Contains(src, s) {
			src = append(src, s)
		}
	}
	if len(src) == 0 {
		return contentSecurityPolicy
	}
	return contentSecurityPolicy + "; img-src " + strings.Join(src, " ")
}

func clientLogoSource(c *pages.Client) string {
	// The template lets no other scheme into a src attribute.
	if c == nil || !strings.HasPrefix(c.LogoURI, "https://") {
		return ""
	}
	return pages.ImageSource(c.LogoURI)
}

func (s *Server) errorPage(w http.ResponseWriter, code int, msg string) {
	s.render(w, code, "error.html", page{Title: "Error", Error: msg})
}

// unavailable is the 503 page for a database that cannot be reached.
func (s *Server) unavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	s.errorPage(w, http.StatusServiceUnavailable, msg)
}

// sessionError answers a page whose sign-in session could not be checked: never as
// if the visitor were signed in, nor as if they were not (a login page would look
// like a sign-out).
func (s *Server) sessionError(w http.ResponseWriter, err error) {
	if errors.Is(err, store.ErrUnavailable) {
		s.unavailable(w, signInUnavailable)
		return
	}
	s.cfg.Log.Error("checking a sign-in session", "err", err)
	s.errorPage(w, http.StatusInternalServerError, "Your sign-in could not be checked; try again in a moment.")
}

// parsePage reads a page's request, its body bounded; when it is not ok, it has
// answered.
func (s *Server) parsePage(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := parseForm(r); err != nil {
		s.errorPage(w, http.StatusBadRequest, "The request is malformed.")
		return false
	}
	if name, ok := notText(r.Form); ok {
		s.errorPage(w, http.StatusBadRequest, "The request is malformed. "+notTextMessage(name))
		return false
	}
	return true
}

// csrfChecked checks a posted form's CSRF token; when it is not ok, it has answered.
func (s *Server) csrfChecked(w http.ResponseWriter, r *http.Request) bool {
	if !s.csrfOK(r) {
		s.errorPage(w, http.StatusForbidden, formExpired)
		return false
	}
	return true
}

// parseAuthorize reads and validates an authorization request and its prompt;
// when it is not ok, it has answered.
func (s *Server) parseAuthorize(w http.ResponseWriter, r *http.Request) (*oauth.AuthorizeRequest, []string, bool) {
	if !s.parsePage(w, r) {
		return nil, nil, false
	}
	p := s.cfg.Provider
	areq, err := p.ParseAuthorize(r)
	if err != nil {
		if errors.Is(err, store.ErrUnavailable) {
			s.unavailable(w, signInUnavailable)
			return nil, nil, false
		}
		if !areq.CanRedirect() {
			// An unknown client or an unregistered redirect URI: the user must learn
			// here that the link is bad, and nothing may go to an address the
			// request made up.
			s.errorPage(w, http.StatusBadRequest, "The app that sent you here made a request this server cannot accept: "+
				oauth.ErrorDescription(err)+" Nothing was sent back to the app.")
			return nil, nil, false
		}
		p.AuthorizeError(w, r, areq, err)
		return nil, nil, false
	}
	prompt := strings.Fields(areq.Prompt)
	if slices.Contains(prompt, "none") && len(prompt) > 1 {
		p.AuthorizeError(w, r, areq, oauth.ErrPromptNoneAlone)
		return nil, nil, false
	}
	return areq, prompt, true
}

// authorize serves the authorization endpoint: validate, sign in, ask for consent
// (unless a grant covers the request or the client is first-party), then issue the
// code. GET shows pages; POST carries the consent decision.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	areq, prompt, ok := s.parseAuthorize(w, r)
	if !ok {
		return
	}
	p := s.cfg.Provider
	now := time.Now()
	user, ok, err := s.signedIn(r)
	if err != nil {
		s.sessionError(w, err)
		return
	}
	subject, authTime := user.Subject, user.AuthTime
	again := !ok
	if ok {
		areq.RequestedAt, again = s.freshSignIn(r, areq, prompt, user.At, authTime, now)
	}
	if again {
		if slices.Contains(prompt, "none") {
			p.LoginRequired(w, r, areq)
			return
		}
		back := s.upstreamReturn(s.loginReturn(r, areq, now), prompt, areq.MaxAge)
		s.renderLogin(w, http.StatusOK, page{CSRF: s.csrfToken(s.session(w, r)), ReturnTo: back})
		return
	}
	// prompt=consent: the consent page even when a grant covers the request.
	askConsent := slices.Contains(prompt, "consent")
	ctx := r.Context()
	client, err := s.cfg.Store.GetClientByID(ctx, areq.ClientID)
	if err != nil {
		p.AuthorizeError(w, r, areq, err)
		return
	}
	if r.Method == http.MethodPost {
		if !s.csrfOK(r) {
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
		p.Approve(w, r, areq, subject, user.Identity, g, authTime)
		return
	}
	grant, err := s.cfg.Store.LookupGrant(ctx, client.ID, subject)
	switch {
	case askConsent:
	case err == nil && grant.Covers(areq.Scopes, time.Now()) && (grant.Source != store.SourceFirstParty || client.SkipConsent):
		_ = s.cfg.Store.TouchGrant(ctx, grant.ID, time.Now())
		p.Approve(w, r, areq, subject, user.Identity, grant, authTime)
		return
	case err != nil && !errors.Is(err, store.ErrNotFound):
		p.AuthorizeError(w, r, areq, err)
		return
	case client.SkipConsent:
		// First-party: the operator passes skipConsent only for namespaces the
		// platform trusts. The approval is recorded all the same, so it can be
		// listed and revoked, but as first-party, not as the user's consent: it ends
		// when skipConsent does. A client whose skipConsent went off since this
		// replica cached it gets the consent page.
		g, err := s.cfg.Store.PutGrant(ctx, &store.ConsentGrant{ClientID: client.ID, Subject: subject, Scopes: areq.Scopes,
			Source: store.SourceFirstParty})
		if err == nil {
			p.Approve(w, r, areq, subject, user.Identity, g, authTime)
			return
		}
		if !errors.Is(err, store.ErrNotFirstParty) {
			p.AuthorizeError(w, r, areq, err)
			return
		}
	}
	if slices.Contains(prompt, "none") {
		p.ConsentRequired(w, r, areq)
		return
	}
	scopes := s.scopeLines(areq.Scopes)
	redirectHost := ""
	if u, err := url.Parse(areq.RedirectURI); err == nil {
		redirectHost = u.Host
	}
	s.render(w, http.StatusOK, "consent.html", page{
		Title: "Allow " + client.Name + "?", Client: pageClient(client), Scopes: scopes, RedirectHost: redirectHost,
		Subject: user.display(), CSRF: s.csrfToken(s.session(w, r)), Query: authorizeQuery(r),
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
	pg := page{CSRF: s.csrfToken(s.session(w, r)), ReturnTo: accountPath}
	if r.URL.Query().Has("signed_out") {
		pg.Notice = "You are signed out."
	}
	s.renderLogin(w, http.StatusOK, pg)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !s.parsePage(w, r) {
		return
	}
	returnTo := safeReturn(r.PostForm.Get("return_to"))
	if !s.csrfOK(r) {
		s.errorPage(w, http.StatusForbidden, formExpired)
		return
	}
	bs, _ := s.readSession(r)
	user := r.PostForm.Get("username")
	if len(user) > maxUsernameLen {
		// Before the throttle: a name no user has must not cost it memory.
		s.renderLogin(w, http.StatusBadRequest, page{CSRF: s.csrfToken(bs), ReturnTo: returnTo,
			Error: fmt.Sprintf("That username is too long: usernames here have at most %d bytes.", maxUsernameLen)})
		return
	}
	again := func(code int, msg string) {
		s.renderLogin(w, code, page{CSRF: s.csrfToken(bs), ReturnTo: returnTo, Username: user, Error: msg})
	}
	ip := clientIP(r, s.cfg.ClientIPHeader, s.cfg.ClientIPTrustedProxies)
	wait, done := s.throttle.attempt(user, ip, time.Now())
	if wait > 0 {
		secs := int(math.Ceil(wait.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		s.cfg.Metrics.loginsThrottled.Inc()
		s.cfg.Log.Warn("sign-in throttled", "username", logUsername(user), "ip", ip, "retryAfter", secs)
		again(http.StatusTooManyRequests, fmt.Sprintf("Too many failed sign-ins. Try again in %s (after %s UTC).",
			plural(secs, "second"), time.Now().Add(wait).UTC().Format("15:04:05")))
		return
	}
	hash, ok, err := s.checkPassword(r.Context(), user, r.PostForm.Get("password"))
	if afterPasswordCheck != nil {
		afterPasswordCheck()
	}
	switch {
	case err != nil:
		done(loginAborted)
	case ok:
		done(loginSucceeded)
	default:
		done(loginFailed)
	}
	if err != nil {
		w.Header().Set("Retry-After", "1")
		again(http.StatusServiceUnavailable, "Too many people are signing in right now. Try again in a moment.")
		return
	}
	if !ok {
		s.cfg.Log.Info("failed sign-in", "username", logUsername(user), "ip", ip)
		again(http.StatusUnauthorized, "The username or password is wrong.")
		return
	}
	// The session is bound to the hash the password matched, not to a fresh reading
	// of the users file: a password changed meanwhile must end this session too.
	if err := s.signIn(w, r, user, hash); err != nil {
		s.cfg.Log.Error("storing a sign-in session", "username", user, "err", err)
		w.Header().Set("Retry-After", "1")
		again(storeErrStatus(err), signInUnavailable)
		return
	}
	http.Redirect(w, r, returnTo, http.StatusSeeOther) // #nosec G710 -- returnTo is one of our own paths, checked above
}

// checkPassword compares password with user's hash, or with the dummy hash when no
// such user exists, so both take the same time; it returns the hash it compared
// with. At most MaxConcurrentLogins comparisons run at once: bcrypt is built to be
// slow, and unbounded it would let a burst of sign-ins take every CPU from the token
// endpoint.
func (s *Server) checkPassword(ctx context.Context, user, password string) (hash []byte, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.bcryptSlots.Acquire(ctx, 1); err != nil {
		return nil, false, err
	}
	defer s.bcryptSlots.Release(1)
	set := s.cfg.Users.current()
	hash, known := set.hashes[user]
	if !known {
		hash = set.dummy
	}
	return hash, bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil && known, nil
}

// afterPasswordCheck, when set (by tests), runs between the password check and the
// start of the session.
var afterPasswordCheck func()

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

// logout ends the sign-in session in the database, so that no copy of the cookie
// works on any replica, and gives the browser a new anonymous session, so that the
// old session's CSRF token is void too. When the database cannot be written the
// sign-out fails visibly: a browser told it is signed out while a copy of its cookie
// still works would be worse.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if !s.parsePage(w, r) || !s.csrfChecked(w, r) {
		return
	}
	if s.signOutBrowser(w, r) {
		http.Redirect(w, r, "/login?signed_out", http.StatusSeeOther)
	}
}

// account lists the signed-in user's connected apps.
func (s *Server) account(w http.ResponseWriter, r *http.Request) {
	user, ok, err := s.signedIn(r)
	subject := user.Subject
	if err != nil {
		s.sessionError(w, err)
		return
	}
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
	s.render(w, http.StatusOK, "account.html", page{Title: "Connected apps", Subject: user.display(), Grants: rows,
		CSRF: s.csrfToken(s.session(w, r))})
}

// revokeFromAccount revokes one of the signed-in user's grants and every token under it.
func (s *Server) revokeFromAccount(w http.ResponseWriter, r *http.Request) {
	if !s.parsePage(w, r) {
		return
	}
	subject, _, ok, err := s.loggedIn(r)
	if err != nil {
		s.sessionError(w, err)
		return
	}
	if !ok {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	if !s.csrfOK(r) {
		s.errorPage(w, http.StatusForbidden, formExpired)
		return
	}
	err = s.cfg.Store.RevokeGrant(r.Context(), r.PostForm.Get("client_id"), subject)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.errorPage(w, storeErrStatus(err), "The app could not be disconnected right now; try again.")
		return
	}
	http.Redirect(w, r, accountPath, http.StatusSeeOther)
}
