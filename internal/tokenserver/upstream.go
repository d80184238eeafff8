package tokenserver

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
)

// UpstreamOIDC is an OpenID provider people sign in with instead of (or besides) the
// users file: the login page sends them there (authorization code with PKCE), and
// what its ID token and userinfo say of them becomes their claims here.
type UpstreamOIDC struct {
	// Issuer is the provider's issuer URL, exactly as its discovery document says it.
	Issuer   string `json:"issuer"`
	ClientID string `json:"clientID"`
	// ClientSecret comes from a file of its own (a mounted Secret), never from the
	// settings file.
	ClientSecret string `json:"-"`
	// Scopes asked of the provider; empty means openid, profile and email.
	Scopes []string `json:"scopes,omitempty"`
	// Claims names the provider's claims the user's attributes come from.
	Claims UpstreamClaims `json:"claims,omitzero"`
	// AllowedGroups, when set, lets in only members of at least one of them (the
	// provider's group names, without GroupsPrefix).
	AllowedGroups []string `json:"allowedGroups,omitempty"`
	// AllowedEmailDomains, when set, lets in only users whose verified email is at
	// one of these domains (exactly; lower case).
	AllowedEmailDomains []string `json:"allowedEmailDomains,omitempty"`
	// UsernamePrefix and GroupsPrefix go before the provider's usernames and
	// groups, keeping them apart from the names apps already grant on.
	UsernamePrefix string `json:"usernamePrefix,omitempty"`
	GroupsPrefix   string `json:"groupsPrefix,omitempty"`
	// DisplayName labels the login page's button ("Sign in with <DisplayName>");
	// empty means the issuer's host.
	DisplayName string `json:"displayName,omitempty"`
	// FetchAllow lists internal ranges (CIDRs) the provider, and every URL its
	// discovery document names, may be reached at: by default only public
	// addresses, as for clients' jwks_uri. An in-cluster provider needs its range.
	FetchAllow []netip.Prefix `json:"fetchAllow,omitempty"`
	// RootCAs, when set, are the CA certificates the provider's TLS certificate is
	// checked against (the system's roots and a private CA's).
	RootCAs *x509.CertPool `json:"-"`
	// HTTPClient, for tests, replaces the guarded client that reaches the provider.
	HTTPClient *http.Client `json:"-"`
}

// LoadUpstreamOIDC reads the upstream provider's settings (JSON, as the operator
// writes them from TokenServer.spec.login.upstreamOIDC) and its client secret, each
// from a file, and, when caFile is set, PEM CA certificates its TLS certificate is
// checked against besides the system's roots.
func LoadUpstreamOIDC(settingsFile, secretFile, caFile string) (*UpstreamOIDC, error) {
	data, err := os.ReadFile(settingsFile) // #nosec G304 -- the operator's mounted ConfigMap
	if err != nil {
		return nil, err
	}
	var u UpstreamOIDC
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&u); err != nil {
		return nil, fmt.Errorf("%s: %w", settingsFile, err)
	}
	p, err := url.Parse(u.Issuer)
	if err != nil || (p.Scheme != schemeHTTPS && p.Scheme != schemeHTTP) || p.Host == "" {
		return nil, fmt.Errorf("%s: issuer: %q is not an http(s) URL", settingsFile, u.Issuer)
	}
	// As the TokenServer's own rule: the client secret and users' codes travel to
	// the provider, so plain http only where they never leave the machine.
	if p.Scheme == schemeHTTP && !slices.Contains([]string{"localhost", "127.0.0.1", "::1"}, p.Hostname()) {
		return nil, fmt.Errorf("%s: issuer: %q must use https; plain http is allowed only for localhost, 127.0.0.1 and [::1]",
			settingsFile, u.Issuer)
	}
	if u.ClientID == "" {
		return nil, fmt.Errorf("%s: clientID: required", settingsFile)
	}
	// An empty list would read as "no restriction": everyone the provider signs in.
	if u.AllowedGroups != nil && len(u.AllowedGroups) == 0 {
		return nil, fmt.Errorf("%s: allowedGroups: an empty list lets nobody in; leave it out to let everyone in", settingsFile)
	}
	if u.AllowedEmailDomains != nil && len(u.AllowedEmailDomains) == 0 {
		return nil, fmt.Errorf("%s: allowedEmailDomains: an empty list lets nobody in; leave it out to let everyone in", settingsFile)
	}
	if secretFile == "" {
		return nil, errors.New("the upstream provider's client secret file is required")
	}
	if u.ClientSecret, err = ReadSecretFile(secretFile); err != nil {
		return nil, err
	}
	if u.ClientSecret == "" {
		return nil, fmt.Errorf("%s: the client secret is empty", secretFile)
	}
	if caFile != "" {
		if u.RootCAs, err = rootsWith(caFile); err != nil {
			return nil, err
		}
	}
	return &u, nil
}

// rootsWith is the system's roots and the CA certificates in caFile.
func rootsWith(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile) // #nosec G304 -- the operator's mounted Secret
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", caFile)
	}
	return pool, nil
}

// UpstreamClaims names the provider's claims that become the user's username, email,
// name and groups. Empty fields take the standard names (preferred_username, email,
// name, groups); a user without a username claim is named by their subject here.
type UpstreamClaims struct {
	Username string `json:"username,omitempty"`
	Email    string `json:"email,omitempty"`
	Name     string `json:"name,omitempty"`
	Groups   string `json:"groups,omitempty"`
}

const (
	upstreamStartPath    = "/login/upstream"
	upstreamCallbackPath = "/login/upstream/callback"
	// upstreamSubjectPrefix starts the subject of every user who signs in upstream.
	// No user of the users file has a colon in their name, so the two can never be
	// taken for each other, whatever the provider calls its users.
	upstreamSubjectPrefix = "upstream:"
	// issuerTagLen is how many characters of the issuer's hash go into upstream
	// subjects: 72 bits, beyond finding another issuer URL with the same tag.
	issuerTagLen = 12
	// upstreamFlowLifetime bounds the round trip through the provider's pages.
	upstreamFlowLifetime = 10 * time.Minute
	upstreamCookiePrefix = "kubeoauth_upstream_"
	maxSubjectLen        = 255 // a ConsentGrant's spec.subject
	// The standard names of the scope and claims the upstream defaults use.
	scopeProfile = "profile"
	claimEmail   = "email"
	claimName    = "name"
	claimGroups  = "groups"
)

func isUpstreamSubject(subject string) bool { return strings.HasPrefix(subject, upstreamSubjectPrefix) }

// upstreamSubject is the subject here of the user sub at the provider issuer:
// "upstream:<issuer tag>:<sub>". A sub is unique only at its issuer (OpenID Connect
// Core 2), so the issuer is part of the subject: when the issuer changes (another
// provider, a test one), the user with the same sub there is someone else, who must
// not inherit the old user's grants, refresh tokens, or accounts at the apps.
func upstreamSubject(issuer, sub string) string {
	sum := sha256.Sum256([]byte(issuer))
	return upstreamSubjectPrefix + base64.RawURLEncoding.EncodeToString(sum[:])[:issuerTagLen] + ":" + sub
}

// upstream is the configured provider, discovered on first use: a provider that is
// down when the token server starts must not keep it from serving the users file.
type upstream struct {
	cfg   UpstreamOIDC
	label string
	// subjectPrefix starts the subjects of this provider's users (upstreamSubject).
	subjectPrefix string
	scopes        []string
	claims        UpstreamClaims
	// key binds upstream users' sessions to these settings: when the provider, the
	// client or the allowed groups change, their sessions end and they sign in (and
	// are checked) again.
	key []byte
	hc  *http.Client

	mu       sync.Mutex
	provider *oidc.Provider
	// discovered is when provider was read; after rediscoverAfter it is read
	// again, so that moved endpoints need no restart.
	discovered      time.Time
	rediscoverAfter time.Duration
}

// upstreamRediscovery is how long a discovery document is used before it is read
// again (go-oidc reads the keys again by itself when an unknown one signs).
const upstreamRediscovery = time.Hour

func newUpstream(cfg UpstreamOIDC) *upstream {
	u := &upstream{cfg: cfg, label: cfg.DisplayName, scopes: cfg.Scopes, claims: cfg.Claims, hc: cfg.HTTPClient,
		subjectPrefix: upstreamSubject(cfg.Issuer, ""), rediscoverAfter: upstreamRediscovery}
	if u.label == "" {
		if p, err := url.Parse(cfg.Issuer); err == nil && p.Host != "" {
			u.label = p.Host
		} else {
			u.label = cfg.Issuer
		}
	}
	if len(u.scopes) == 0 {
		u.scopes = []string{oidc.ScopeOpenID, scopeProfile, claimEmail}
	}
	if !slices.Contains(u.scopes, oidc.ScopeOpenID) {
		u.scopes = append([]string{oidc.ScopeOpenID}, u.scopes...)
	}
	for _, c := range []struct {
		name *string
		def  string
	}{{&u.claims.Username, "preferred_username"}, {&u.claims.Email, claimEmail}, {&u.claims.Name, claimName},
		{&u.claims.Groups, claimGroups}} {
		if *c.name == "" {
			*c.name = c.def
		}
	}
	if u.hc == nil {
		u.hc = upstreamClient(cfg.FetchAllow, cfg.RootCAs)
	}
	h := sha256.New()
	settings := []string{cfg.Issuer, cfg.ClientID, u.claims.Username, u.claims.Email, u.claims.Name, u.claims.Groups,
		cfg.UsernamePrefix, cfg.GroupsPrefix}
	for _, list := range [][]string{cfg.AllowedGroups, cfg.AllowedEmailDomains} {
		list = slices.Clone(list)
		slices.Sort(list)
		// The list's length first: no moving of entries between lists makes the same key.
		settings = append(append(settings, fmt.Sprint(len(list))), list...)
	}
	for _, f := range settings {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	u.key = h.Sum(nil)
	return u
}

// discover returns the provider, fetching its discovery document the first time
// (and again after a failure). Its signing keys are fetched when an ID token first
// needs them, and again when one is signed with a key not seen yet.
//
// The lock is never held over the network: with a provider that hangs, each
// sign-in waits for its own request (bounded by its context and 10 seconds), not
// for everyone else's in turn.
//
// A document older than rediscoverAfter is read again; while that fails, the
// last good one serves.
func (u *upstream) discover(ctx context.Context) (*oidc.Provider, error) {
	u.mu.Lock()
	old, fresh := u.provider, time.Since(u.discovered) < u.rediscoverAfter
	u.mu.Unlock()
	if old != nil && fresh {
		return old, nil
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, u.hc), 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(ctx, u.cfg.Issuer)
	if err == nil {
		err = checkEndpoints(u.cfg.Issuer, p)
	}
	if err != nil {
		if old != nil {
			return old, nil
		}
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.provider, u.discovered = p, time.Now()
	return p, nil
}

func (u *upstream) oauth2Config(p *oidc.Provider, redirect string) *oauth2.Config {
	return &oauth2.Config{ClientID: u.cfg.ClientID, ClientSecret: u.cfg.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: redirect, Scopes: u.scopes}
}

// upstreamFlow is what the browser carries through the provider's pages, in a
// cookie signed with the cookie secret: the state the callback must bring back, the
// nonce the ID token must hold, the PKCE verifier, and where to go afterwards. The
// cookie is what binds the callback to the browser that started the sign-in: a
// callback URL made in another browser (an attacker's own sign-in, to log the
// victim in as the attacker) finds no cookie of its state there.
type upstreamFlow struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	ReturnTo string `json:"r"`
	Expires  int64  `json:"e"`
	// Login and MaxAge are the app's prompt=login and max_age, forwarded to the
	// provider; Started is when the flow began (Unix seconds), which the
	// provider's auth_time must not be before under prompt=login.
	Login   bool   `json:"l,omitempty"`
	MaxAge  *int64 `json:"m,omitempty"`
	Started int64  `json:"t"`
}

// upstreamSessionIdentity is what a sign-in session of an upstream user keeps: the
// mapped identity and the provider's auth_time, when it said.
type upstreamSessionIdentity struct {
	oauth.Identity
	AuthTime int64 `json:"upstream_auth_time,omitempty"`
}

// authTimeSkew is how far the provider's clock may be behind ours before its
// auth_time is taken for an older sign-in than prompt=login or max_age allow.
const authTimeSkew = 30 * time.Second

// The login page's return URL carries a pushed request's prompt=login and max_age
// under these names: the request's own are stored with it, not in the URL. fosite
// ignores parameters it does not know.
const (
	reauthLoginParam  = "kubeoauth_upstream_login"
	reauthMaxAgeParam = "kubeoauth_upstream_max_age"
)

// upstreamReturn adds the app's prompt=login and max_age to the login page's
// return URL when the URL does not carry them itself (a pushed request).
func (s *Server) upstreamReturn(returnTo string, prompt []string, maxAge string) string {
	if s.upstream == nil {
		return returnTo
	}
	u, err := url.Parse(returnTo)
	if err != nil {
		return returnTo
	}
	q := u.Query()
	if slices.Contains(prompt, "login") && !q.Has("prompt") {
		q.Set(reauthLoginParam, "1")
	}
	if maxAge != "" && !q.Has("max_age") {
		q.Set(reauthMaxAgeParam, maxAge)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// reauthOf reads prompt=login and max_age from the authorization request the
// login page returns to, for the provider to honour too: otherwise its single
// sign-on would let "sign in again" through without anyone signing in.
func reauthOf(returnTo string) (login bool, maxAge *int64) {
	u, err := url.Parse(returnTo)
	if err != nil || u.Path != "/oauth2/auth" {
		return false, nil
	}
	q := u.Query()
	login = slices.Contains(strings.Fields(q.Get("prompt")), "login") || q.Get(reauthLoginParam) == "1"
	age := q.Get("max_age")
	if age == "" {
		age = q.Get(reauthMaxAgeParam)
	}
	if n, err := strconv.ParseInt(age, 10, 64); err == nil && n >= 0 {
		maxAge = &n
	}
	return login, maxAge
}

func randomString() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// upstreamCookie names the cookie of the flow with that state: one per sign-in, so
// that two tabs signing in at once do not undo each other.
func (s *Server) upstreamCookie(state string) string {
	sum := sha256.Sum256([]byte(state))
	name := upstreamCookiePrefix + base64.RawURLEncoding.EncodeToString(sum[:9])
	if s.cfg.SecureCookies {
		return "__Host-" + name
	}
	return name
}

func (s *Server) flowMAC(name, payload string) string {
	m := hmac.New(sha256.New, append([]byte("kubeoauth-upstream-flow:"), s.cfg.CookieSecret...))
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// maxFlowCookie bounds the flow cookie's name and value: browsers drop a cookie
// over 4096 bytes in silence, and the callback would then look forged.
const maxFlowCookie = 4000

// writeFlow sets the flow's cookie; false when it would be too big for browsers (an
// authorization request with very long parameters).
func (s *Server) writeFlow(w http.ResponseWriter, f upstreamFlow) bool {
	data, _ := json.Marshal(f) // strings and a number always marshal
	name := s.upstreamCookie(f.State)
	payload := base64.RawURLEncoding.EncodeToString(data)
	value := payload + "." + s.flowMAC(name, payload)
	if len(name)+len(value) > maxFlowCookie {
		return false
	}
	// #nosec G124 -- Secure follows the issuer's scheme. SameSite=Lax: the provider
	// sends the browser back with a top-level GET, which carries it.
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true,
		Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: int(upstreamFlowLifetime.Seconds())})
	return true
}

// takeFlow returns the flow the callback's state belongs to, if this browser
// started it, and deletes its cookie: a callback works once.
func (s *Server) takeFlow(w http.ResponseWriter, r *http.Request, state string) (upstreamFlow, bool) {
	if state == "" {
		return upstreamFlow{}, false
	}
	name := s.upstreamCookie(state)
	c, err := r.Cookie(name)
	if err != nil {
		return upstreamFlow{}, false
	}
	// #nosec G124 -- Secure follows the issuer's scheme
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", HttpOnly: true, Secure: s.cfg.SecureCookies,
		SameSite: http.SameSiteLaxMode, MaxAge: -1})
	payload, mac, ok := strings.Cut(c.Value, ".")
	if !ok || subtle.ConstantTimeCompare([]byte(mac), []byte(s.flowMAC(name, payload))) != 1 {
		return upstreamFlow{}, false
	}
	data, err := base64.RawURLEncoding.DecodeString(payload)
	var f upstreamFlow
	if err != nil || json.Unmarshal(data, &f) != nil {
		return upstreamFlow{}, false
	}
	if subtle.ConstantTimeCompare([]byte(f.State), []byte(state)) != 1 || time.Now().Unix() > f.Expires {
		return upstreamFlow{}, false
	}
	return f, true
}

// renderLogin shows the login page with what this server offers: the password form
// when it has a users file (or no upstream provider), the provider's button when it
// has one.
func (s *Server) renderLogin(w http.ResponseWriter, code int, pg page) {
	pg.Title = signInTitle
	pg.PasswordForm = s.upstream == nil || s.cfg.Users.configured()
	if s.upstream != nil {
		pg.Upstream = s.upstream.label
	}
	s.render(w, code, "login.html", pg)
}

// upstreamFailed answers a sign-in through the provider that did not work: the
// login page again, saying why, so that the user can try again (or use a password).
func (s *Server) upstreamFailed(w http.ResponseWriter, r *http.Request, code int, returnTo, msg string) {
	if code == http.StatusServiceUnavailable || code == http.StatusBadGateway {
		w.Header().Set("Retry-After", "5")
	}
	s.renderLogin(w, code, page{CSRF: s.csrfToken(s.session(w, r)), ReturnTo: returnTo, Error: msg})
}

// safeReturn keeps a sign-in's return_to to our own authorization endpoint or the
// device page, for a password or the upstream provider alike: an open redirect
// would help phishing.
func safeReturn(returnTo string) string {
	if !strings.HasPrefix(returnTo, "/oauth2/auth?") && !isDeviceReturn(returnTo) {
		return accountPath
	}
	return returnTo
}

// upstreamStart sends the browser to the provider's authorization endpoint.
func (s *Server) upstreamStart(w http.ResponseWriter, r *http.Request) {
	if s.upstream == nil {
		s.errorPage(w, http.StatusNotFound, "This server does not sign people in through another provider.")
		return
	}
	if !s.parsePage(w, r) || !s.csrfChecked(w, r) {
		return
	}
	returnTo := safeReturn(r.PostForm.Get("return_to"))
	u := s.upstream
	p, err := u.discover(r.Context())
	if err != nil {
		s.cfg.Log.Error("upstream provider: discovery failed", "issuer", u.cfg.Issuer, "err", err)
		s.upstreamFailed(w, r, http.StatusBadGateway, returnTo, fmt.Sprintf(
			"Signing in with %s is unavailable: %s cannot be reached right now. Try again in a moment.", u.label, u.cfg.Issuer))
		return
	}
	now := time.Now()
	f := upstreamFlow{State: randomString(), Nonce: randomString(), Verifier: oauth2.GenerateVerifier(), ReturnTo: returnTo,
		Expires: now.Add(upstreamFlowLifetime).Unix(), Started: now.Unix()}
	f.Login, f.MaxAge = reauthOf(returnTo)
	if !s.writeFlow(w, f) {
		s.upstreamFailed(w, r, http.StatusBadRequest, returnTo, fmt.Sprintf("The app's request is too long to carry "+
			"through %s and back. Ask the app's developers to shorten it or to push it first (pushed authorization requests).", u.label))
		return
	}
	opts := []oauth2.AuthCodeOption{oidc.Nonce(f.Nonce), oauth2.S256ChallengeOption(f.Verifier)}
	if f.Login {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login"))
	}
	if f.MaxAge != nil {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.FormatInt(*f.MaxAge, 10)))
	}
	to := u.oauth2Config(p, s.cfg.Provider.Issuer()+upstreamCallbackPath).AuthCodeURL(f.State, opts...)
	http.Redirect(w, r, to, http.StatusSeeOther) // #nosec G710 -- the provider's own authorization endpoint, from its discovery
}

// upstreamCallback is where the provider sends the browser back: the code is
// exchanged (with the PKCE verifier), the ID token verified against the provider's
// keys, its nonce checked, the claims mapped, the allowed groups checked; then the
// user is signed in here and goes on with the authorization request they came with,
// as after a password.
func (s *Server) upstreamCallback(w http.ResponseWriter, r *http.Request) {
	if s.upstream == nil {
		s.errorPage(w, http.StatusNotFound, "This server does not sign people in through another provider.")
		return
	}
	u := s.upstream
	q := r.URL.Query()
	f, ok := s.takeFlow(w, r, q.Get("state"))
	if !ok {
		s.cfg.Log.Warn("upstream callback without a matching sign-in in this browser")
		s.upstreamFailed(w, r, http.StatusBadRequest, accountPath, fmt.Sprintf("This sign-in with %s was not started in this "+
			"browser, was already used, or took longer than %d minutes, so it was refused. Start again.", u.label,
			int(upstreamFlowLifetime.Minutes())))
		return
	}
	if e := q.Get("error"); e != "" {
		desc := q.Get("error_description")
		s.cfg.Log.Info("upstream provider refused the sign-in", "error", e, "description", desc)
		msg := fmt.Sprintf("%s did not sign you in (%s).", u.label, e)
		if desc != "" {
			msg = fmt.Sprintf("%s did not sign you in (%s: %s).", u.label, e, desc)
		}
		s.upstreamFailed(w, r, http.StatusUnauthorized, f.ReturnTo, msg)
		return
	}
	id, subject, err := s.upstreamIdentity(r.Context(), f, q.Get("code"))
	if err != nil {
		var refused *upstreamRefusal
		if errors.As(err, &refused) {
			s.cfg.Log.Info("upstream sign-in refused", "reason", refused.log)
			s.upstreamFailed(w, r, refused.code, f.ReturnTo, refused.msg)
			return
		}
		s.cfg.Log.Error("upstream sign-in failed", "issuer", u.cfg.Issuer, "err", err)
		s.upstreamFailed(w, r, http.StatusBadGateway, f.ReturnTo, fmt.Sprintf(
			"Signing in with %s did not work: %s. Try again in a moment.", u.label, describeUpstreamError(err)))
		return
	}
	data, _ := json.Marshal(id) // strings, a bool, a number and a list of strings always marshal
	if err := s.startSession(w, r, subject, s.fingerprint(subject, u.key), data); err != nil {
		s.cfg.Log.Error("storing a sign-in session", "subject", subject, "err", err)
		s.upstreamFailed(w, r, storeErrStatus(err), f.ReturnTo, signInUnavailable)
		return
	}
	s.cfg.Log.Info("signed in upstream", "subject", subject, "username", logUsername(id.Username))
	http.Redirect(w, r, f.ReturnTo, http.StatusSeeOther) // #nosec G710 -- one of our own paths, checked when the flow began
}

// upstreamRefusal is a sign-in the provider completed that this server refuses.
type upstreamRefusal struct {
	code     int
	msg, log string
}

func (e *upstreamRefusal) Error() string { return e.log }

// upstreamStep names the step of the callback that failed, for the page.
type upstreamStep struct {
	step string
	err  error
}

func (e *upstreamStep) Error() string { return e.step + ": " + e.err.Error() }
func (e *upstreamStep) Unwrap() error { return e.err }

func describeUpstreamError(err error) string {
	var st *upstreamStep
	if !errors.As(err, &st) {
		return "an unexpected error"
	}
	var re *oauth2.RetrieveError
	if errors.As(st.err, &re) && re.ErrorCode != "" {
		return fmt.Sprintf("%s (%s)", st.step, re.ErrorCode)
	}
	return st.step
}

// upstreamIdentity turns the callback's code into the user's identity and subject.
func (s *Server) upstreamIdentity(ctx context.Context, f upstreamFlow, code string) (*upstreamSessionIdentity, string, error) {
	u := s.upstream
	p, err := u.discover(ctx)
	if err != nil {
		return nil, "", &upstreamStep{"its discovery document could not be read", err}
	}
	ctx = oidc.ClientContext(ctx, u.hc)
	tok, err := u.oauth2Config(p, s.cfg.Provider.Issuer()+upstreamCallbackPath).Exchange(ctx, code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		return nil, "", &upstreamStep{"the sign-in code could not be exchanged for tokens", err}
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, "", &upstreamStep{"its answer held no ID token", errors.New("no id_token in the token response")}
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: u.cfg.ClientID}).Verify(ctx, raw)
	if err != nil {
		return nil, "", &upstreamStep{"its ID token could not be verified", err}
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.Nonce)) != 1 {
		return nil, "", &upstreamStep{"its ID token was not issued for this sign-in", errors.New("the ID token's nonce does not match")}
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, "", &upstreamStep{"its ID token could not be read", err}
	}
	if u.lacksClaims(claims) && p.UserInfoEndpoint() != "" {
		// Many providers put only sub in the ID token when they also issue an access
		// token (OpenID Connect Core 5.4): the rest is at userinfo.
		ui, err := p.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return nil, "", &upstreamStep{"its userinfo endpoint did not answer", err}
		}
		if ui.Subject != idt.Subject {
			// OpenID Connect Core 5.3.2: a userinfo answer about someone else is not used.
			return nil, "", &upstreamStep{"its userinfo is about another user",
				fmt.Errorf("userinfo sub %q, ID token sub %q", ui.Subject, idt.Subject)}
		}
		more := map[string]any{}
		if err := ui.Claims(&more); err != nil {
			return nil, "", &upstreamStep{"its userinfo could not be read", err}
		}
		for k, v := range more {
			if _, ok := claims[k]; !ok {
				claims[k] = v
			}
		}
	}
	if idt.Subject == "" {
		// go-oidc does not insist on sub; without one, every user of the provider
		// would be the one subject "upstream:<tag>:".
		return nil, "", &upstreamRefusal{code: http.StatusBadGateway, log: "the provider's ID token has no sub",
			msg: fmt.Sprintf("%s did not say who you are (its ID token has no sub), so you cannot be signed in. "+
				"Tell the people who run this service.", u.label)}
	}
	subject := u.subjectPrefix + idt.Subject
	if !isText(subject) {
		return nil, "", &upstreamRefusal{code: http.StatusBadGateway, log: fmt.Sprintf("subject is not text: %q", subject),
			msg: fmt.Sprintf("%s names you with an identifier that holds a NUL byte, which this server cannot keep.", u.label)}
	}
	if len(subject) > maxSubjectLen {
		return nil, "", &upstreamRefusal{code: http.StatusBadGateway, log: "subject too long: " + subject,
			msg: fmt.Sprintf("%s names you with an identifier of %d characters; this server takes at most %d.", u.label,
				len(idt.Subject), maxSubjectLen-len(u.subjectPrefix))}
	}
	authTime, err := u.checkAuthTime(f, idt, time.Now())
	if err != nil {
		return nil, "", err
	}
	id, groups := u.mapClaims(subject, claims, s.cfg.Log.Warn)
	allowed := func(g string) bool { return slices.Contains(u.cfg.AllowedGroups, g) }
	if len(u.cfg.AllowedGroups) > 0 && !slices.ContainsFunc(groups, allowed) {
		return nil, "", &upstreamRefusal{code: http.StatusForbidden,
			log: fmt.Sprintf("%s (%s) is in none of the allowed groups; groups %v", subject, id.Username, id.Groups),
			msg: fmt.Sprintf("You signed in at %s as %s, but only members of certain groups may sign in here, and you are "+
				"in none of them. Ask the people who run this service for access.", u.label, id.Username)}
	}
	if len(u.cfg.AllowedEmailDomains) > 0 && !u.emailDomainAllowed(id) {
		return nil, "", &upstreamRefusal{code: http.StatusForbidden,
			log: fmt.Sprintf("%s (%s): email %q (verified %t) is at none of the allowed domains", subject, id.Username,
				id.Email, id.EmailVerified),
			msg: fmt.Sprintf("You signed in at %s as %s, but only people with an email address at certain domains, "+
				"verified by %s, may sign in here, and yours is not one of them. Ask the people who run this service for access.",
				u.label, id.Username, u.label)}
	}
	if _, local := s.cfg.Users.current().hashes[id.Username]; local {
		// Apps key on preferred_username too (kube-apiserver's username claim,
		// Grafana's login): the provider's user must not become the local one there.
		return nil, "", &upstreamRefusal{code: http.StatusForbidden,
			log: fmt.Sprintf("%s: username %q is a users-file username", subject, id.Username),
			msg: fmt.Sprintf("You signed in at %s as %s, but %s is the name of a local account here, so you cannot be "+
				"signed in under it. Ask the people who run this service to set a username prefix for %s.",
				u.label, id.Username, id.Username, u.label)}
	}
	return &upstreamSessionIdentity{Identity: *id, AuthTime: authTime}, subject, nil
}

// checkAuthTime reads the provider's auth_time, when it says one, and refuses a
// sign-in older than the app's prompt=login or max_age allow: a provider that
// ignored them let the user through on its single sign-on, and this server would
// otherwise vouch for a sign-in that did not happen.
func (u *upstream) checkAuthTime(f upstreamFlow, idt *oidc.IDToken, now time.Time) (int64, error) {
	var c struct {
		AuthTime *float64 `json:"auth_time"`
	}
	if err := idt.Claims(&c); err != nil || c.AuthTime == nil {
		return 0, nil // a provider that says no auth_time: the sign-in counts as now
	}
	at := time.Unix(int64(*c.AuthTime), 0)
	stale := f.Login && at.Before(time.Unix(f.Started, 0).Add(-authTimeSkew))
	if f.MaxAge != nil && now.Sub(at) > time.Duration(*f.MaxAge)*time.Second+authTimeSkew {
		stale = true
	}
	if stale {
		return 0, &upstreamRefusal{code: http.StatusUnauthorized,
			log: fmt.Sprintf("the provider's auth_time %s is older than prompt=login (%t) or max_age (%v) allow", at.UTC(), f.Login, f.MaxAge),
			msg: fmt.Sprintf("The app asked you to sign in again, but %s let you through with your sign-in of %s instead of asking "+
				"for your password. Sign out at %s, then try again.", u.label, at.UTC().Format(time.RFC1123), u.label)}
	}
	// Within the clock skew allowed above, the sign-in counts as meeting what the
	// app asked (fosite checks auth_time against the request's time once more).
	t := at.Unix()
	if f.Login {
		t = max(t, f.Started)
	}
	if f.MaxAge != nil {
		t = max(t, f.Started-*f.MaxAge)
	}
	return t, nil
}

// emailDomainAllowed says whether the user's email is verified by the provider and
// at one of the allowed domains. An unverified address proves nothing: anyone can
// type corp.example into a profile at an open provider.
func (u *upstream) emailDomainAllowed(id *oauth.Identity) bool {
	at := strings.LastIndexByte(id.Email, '@')
	if !id.EmailVerified || at < 0 {
		return false
	}
	return slices.Contains(u.cfg.AllowedEmailDomains, strings.ToLower(id.Email[at+1:]))
}

// lacksClaims says whether the ID token misses a claim the mapping reads.
func (u *upstream) lacksClaims(claims map[string]any) bool {
	for _, name := range []string{u.claims.Username, u.claims.Email, u.claims.Name, u.claims.Groups} {
		if _, ok := claims[name]; !ok {
			return true
		}
	}
	return false
}

// mapClaims makes the user's identity from the provider's claims, and returns the
// provider's own group names (without the prefix) for allowedGroups. A value of the
// wrong kind (an email that is no address, groups that are not strings) is left
// out and logged rather than refusing the user: the claims are the provider's, not
// theirs to fix. A user without a username is named by their subject here, which
// cannot be anyone else's name (it has colons and the issuer's tag), not by the
// provider's bare sub, which could be.
func (u *upstream) mapClaims(subject string, claims map[string]any, warn func(string, ...any)) (*oauth.Identity, []string) {
	str := func(name string) string {
		v, _ := claims[name].(string)
		if !isText(v) {
			// A NUL byte (JSON allows \u0000), which the store cannot keep.
			warn("upstream provider: a claim holds a NUL byte; left out", "claim", name, "subject", subject)
			return ""
		}
		return strings.TrimSpace(v)
	}
	id := &oauth.Identity{Username: str(u.claims.Username), Name: str(u.claims.Name)}
	if id.Username != "" {
		id.Username = u.cfg.UsernamePrefix + id.Username
	}
	if id.Username == "" || len(id.Username) > maxUsernameLen {
		id.Username = subject
	}
	if email := str(u.claims.Email); email != "" {
		if a, err := mail.ParseAddress(email); err == nil && a.Address == email {
			id.Email = email
			// email_verified speaks of the standard email claim only: an address
			// from another claim (a profile attribute the user may edit) is
			// unverified, or anyone could claim a colleague's address as verified.
			if u.claims.Email == claimEmail {
				switch v := claims["email_verified"].(type) {
				case bool:
					id.EmailVerified = v
				case string: // some providers send "true"
					id.EmailVerified = v == "true"
				}
			}
		} else {
			warn("upstream provider: the email claim is not an address; left out", "claim", u.claims.Email, "subject", subject)
		}
	}
	var groups []string
	switch v := claims[u.claims.Groups].(type) {
	case string:
		if v = strings.TrimSpace(v); v != "" && isText(v) {
			groups = []string{v}
		}
	case []any:
		for _, g := range v {
			if s, ok := g.(string); ok && isText(s) {
				// Trimmed, as allowedGroups (which cannot have spaces around) is
				// matched against them; a group of spaces is no group.
				if s = strings.TrimSpace(s); s != "" && !slices.Contains(groups, s) {
					groups = append(groups, s)
				}
			}
		}
	}
	for _, g := range groups {
		id.Groups = append(id.Groups, u.cfg.GroupsPrefix+g)
	}
	return id, groups
}

// discoverUpstream reads the provider's discovery document at start, so that the
// first person to sign in does not wait for it and a wrong issuer shows in the log
// at once. A provider that is down is not fatal: the login page tries again.
func (s *Server) discoverUpstream(ctx context.Context) {
	if s.upstream == nil {
		return
	}
	if _, err := s.upstream.discover(ctx); err != nil {
		s.cfg.Log.Warn("upstream provider: discovery failed; it is tried again at the next sign-in",
			"issuer", s.upstream.cfg.Issuer, "err", err)
		return
	}
	s.cfg.Log.Info("upstream provider discovered", "issuer", s.upstream.cfg.Issuer)
}
