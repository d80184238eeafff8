package tokenserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/pages"
	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/version"
)

// Config configures a Server.
type Config struct {
	Provider *oauth.Provider
	Store    oauth.Storage
	Metrics  *Metrics
	Log      *slog.Logger
	// AdminToken authenticates admin API callers (Authorization: Bearer).
	AdminToken string
	// SigningAlgorithm is advertised in discovery (ES256 or RS256).
	SigningAlgorithm string
	// JWKS is the public key set served at /.well-known/jwks.json.
	JWKS any
	// Events wakes admin event long-polls; nil means poll only.
	Events *Broadcaster
	// Users signs people in on the login page; nil means nobody may.
	Users *Users
	// Upstream, when set, signs people in through another OpenID provider too.
	Upstream *UpstreamOIDC
	// LoginThrottle limits failed sign-ins; zero means DefaultLoginThrottle.
	LoginThrottle LoginThrottle
	// MaxConcurrentLogins bounds the password checks (bcrypt) running at once;
	// zero means one per CPU.
	MaxConcurrentLogins int
	// ClientIPHeader names the header a trusted proxy in front puts the client's
	// address in (e.g. X-Forwarded-For), for per-address throttling; empty means the
	// connection's peer. It is read only from peers in ClientIPTrustedProxies.
	ClientIPHeader         string
	ClientIPTrustedProxies []netip.Prefix
	// ScopeDescriptions are shown on the consent page.
	ScopeDescriptions map[string]string
	// Pages are the templates of the pages; nil means the built-in ones.
	Pages *pages.Set
	// Brand is the display name and logo every page shows.
	Brand pages.Brand
	// CookieSecret signs login cookies; every replica must share it.
	CookieSecret []byte
	// SecretHasher hashes the client secrets the admin API is given.
	SecretHasher *store.SecretHasher
	// SecureCookies marks cookies Secure (an https issuer).
	SecureCookies bool
	// TokenMiddleware, when set, wraps the token endpoint inside its metrics: test
	// builds that answer errors use it (cmd/tokenserver, docs/upgrades.md).
	TokenMiddleware func(http.Handler) http.Handler
	// RefreshCoalesceWindow is how long a refresh response is replayed to identical
	// requests; 0 means a second (recentWindow). Tests set it longer, to make the
	// replay deterministic on a slow machine.
	RefreshCoalesceWindow time.Duration
	// ReadFence reads the upgrade fence of the database (fence.go); nil: never
	// fenced. Serve polls it.
	ReadFence func(context.Context) (postgres.Fence, bool, error)
	// FenceMaxHold is the longest a request is held by the fence; 0 means
	// DefaultFenceMaxHold.
	FenceMaxHold time.Duration
	// FencePollInterval is how often the fence is read; 0 means FencePollInterval.
	FencePollInterval time.Duration
}

// Server serves the public and admin HTTP APIs.
type Server struct {
	cfg       Config
	refreshes singleflight.Group
	recent    recentResponses
	draining  atomic.Bool
	throttle  *throttle
	// userCodes limits wrong user codes on the device page, as throttle sign-ins.
	userCodes *throttle
	// bcryptSlots bounds concurrent password checks.
	bcryptSlots *semaphore.Weighted
	// fence follows the upgrade fence; nil without Config.ReadFence.
	fence *fenceWatch
	// upstream is Config.Upstream, nil without one.
	upstream *upstream
}

// Drain makes readiness fail from now on while requests are still served: the
// replica is shutting down, and the load balancers in front of it should stop
// sending it connections before it stops accepting them.
func (s *Server) Drain() { s.draining.Store(true) }

// Draining tells whether Drain was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// versionHeader names the response header that carries the build's version.
const versionHeader = "X-Kubeoauth-Version"

// common adds what every response carries: the version, so that a client (and an
// upgrade's tests) sees which version answered; and, once the replica drains,
// Connection: close, so that a client holding a keep-alive connection to it opens its
// next one to another replica instead of being stranded here when it stops.
func (s *Server) common(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(versionHeader, version.Version)
		if s.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// New returns a server.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.Pages == nil {
		cfg.Pages = pages.Builtin()
	}
	if cfg.Users == nil {
		cfg.Users, _ = StaticUsers(map[string][]byte{})
	}
	if cfg.LoginThrottle == (LoginThrottle{}) {
		cfg.LoginThrottle = DefaultLoginThrottle
	}
	if cfg.MaxConcurrentLogins <= 0 {
		cfg.MaxConcurrentLogins = runtime.GOMAXPROCS(0)
	}
	if cfg.RefreshCoalesceWindow <= 0 {
		cfg.RefreshCoalesceWindow = recentWindow
	}
	s := &Server{cfg: cfg, throttle: newThrottle(cfg.LoginThrottle, cfg.Metrics.throttleKeys), userCodes: newThrottle(cfg.LoginThrottle, nil),
		bcryptSlots: semaphore.NewWeighted(int64(cfg.MaxConcurrentLogins)),
		recent:      recentResponses{window: cfg.RefreshCoalesceWindow}}
	if cfg.ReadFence != nil {
		s.fence = newFenceWatch(cfg.ReadFence, cfg.FenceMaxHold, cfg.FencePollInterval)
	}
	if cfg.Upstream != nil {
		s.upstream = newUpstream(*cfg.Upstream)
	}
	return s
}

// maxBody bounds request bodies on the public endpoints: no OAuth request needs more.
const maxBody = 64 << 10

// PublicHandler serves the OAuth 2.0 / OpenID Connect endpoints, the pages and
// health. Metrics are on MetricsHandler, off the public listener: they tell
// outsiders the server's load and clients' activity.
func (s *Server) PublicHandler() http.Handler {
	m := s.cfg.Metrics
	// The pages' forms only ever post to this origin. A cross-origin browser POST
	// is refused before any handler runs: a sibling subdomain is same-site, so
	// SameSite cookies alone would let it through.
	cop := http.NewCrossOriginProtection()
	if u, err := url.Parse(s.cfg.Provider.Issuer()); err == nil {
		// Behind a proxy that rewrites Host, the issuer's own origin is still ours.
		_ = cop.AddTrustedOrigin(u.Scheme + "://" + u.Host)
	}
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.errorPage(w, http.StatusForbidden, crossOrigin)
	}))
	form := func(h http.HandlerFunc) http.HandlerFunc { return cop.Handler(h).ServeHTTP }
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", m.instrument("discovery", s.discovery))
	mux.HandleFunc("GET /.well-known/jwks.json", m.instrument("jwks", s.jwks))
	token := http.Handler(s.oauthEndpoint(s.token))
	if s.cfg.TokenMiddleware != nil {
		token = s.cfg.TokenMiddleware(token)
	}
	mux.HandleFunc("POST /oauth2/token", m.instrument("token", token.ServeHTTP))
	mux.HandleFunc("POST /oauth2/introspect", m.instrument("introspect", s.oauthEndpoint(s.cfg.Provider.Introspect)))
	mux.HandleFunc("POST /oauth2/par", m.instrument("par", s.oauthEndpoint(s.cfg.Provider.PushedAuthorize)))
	mux.HandleFunc("POST "+deviceAuthPath, m.instrument("device", s.oauthEndpoint(s.cfg.Provider.DeviceAuthorize)))
	mux.HandleFunc("GET "+oauth.DevicePath, m.instrument("device", s.devicePage))
	mux.HandleFunc("POST "+oauth.DevicePath, m.instrument("device", form(s.deviceDecision)))
	mux.HandleFunc("POST /oauth2/revoke", m.instrument("revoke", s.oauthEndpoint(s.cfg.Provider.Revoke)))
	mux.HandleFunc("GET /userinfo", m.instrument("userinfo", s.oauthEndpoint(s.userinfo)))
	mux.HandleFunc("POST /userinfo", m.instrument("userinfo", s.oauthEndpoint(s.userinfo)))
	mux.HandleFunc("GET /oauth2/auth", m.instrument("authorize", s.authorize))
	mux.HandleFunc("POST /oauth2/auth", m.instrument("authorize", form(s.authorize)))
	mux.HandleFunc("GET /login", m.instrument("login", s.loginPage))
	mux.HandleFunc("POST /login", m.instrument("login", form(s.login)))
	mux.HandleFunc("POST /logout", m.instrument("logout", form(s.logout)))
	mux.HandleFunc("POST "+upstreamStartPath, m.instrument("login_upstream", form(s.upstreamStart)))
	mux.HandleFunc("GET "+upstreamCallbackPath, m.instrument("login_upstream", s.upstreamCallback))
	mux.HandleFunc("GET "+endSessionPath, m.instrument("logout", s.endSession))
	// Not behind form(): an app may post its end-session request from its own origin.
	mux.HandleFunc("POST "+endSessionPath, m.instrument("logout", s.endSession))
	mux.HandleFunc("POST "+endSessionConfirmPath, m.instrument("logout", form(s.confirmEndSession)))
	mux.HandleFunc("GET /account", m.instrument("account", s.account))
	// Apart from the page view: a failed disconnection is a failed revocation, which
	// the revocations alert reads by this label.
	mux.HandleFunc("POST /account/revoke", m.instrument("account_revoke", form(s.revokeFromAccount)))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	return s.common(s.fenced(mux, false))
}

// MetricsHandler serves Prometheus metrics, on a listener of its own.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Metrics.Registry, promhttp.HandlerOpts{}))
	return s.common(mux)
}

func (s *Server) discovery(w http.ResponseWriter, _ *http.Request) {
	iss := s.cfg.Provider.Issuer()
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                iss,
		"authorization_endpoint":                iss + "/oauth2/auth",
		"token_endpoint":                        iss + "/oauth2/token",
		"introspection_endpoint":                iss + "/oauth2/introspect",
		"revocation_endpoint":                   iss + "/oauth2/revoke",
		"userinfo_endpoint":                     iss + "/userinfo",
		"jwks_uri":                              iss + "/.well-known/jwks.json",
		"end_session_endpoint":                  iss + endSessionPath,
		"response_types_supported":              supportedResponseTypes,
		"response_modes_supported":              []string{"query"},
		"grant_types_supported":                 knownGrantTypes,
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{s.cfg.SigningAlgorithm},
		"token_endpoint_auth_methods_supported": knownAuthMethods,
		"code_challenge_methods_supported":      []string{"S256"},
		// OpenID Connect request objects are refused (oauth.ParseAuthorize); a
		// missing request_uri_parameter_supported would mean true.
		"request_parameter_supported":     false,
		"request_uri_parameter_supported": false,
		// RFC 9207: authorization responses carry iss, against mix-up attacks.
		"authorization_response_iss_parameter_supported": true,
		"scopes_supported":                                 s.scopesSupported(),
		"pushed_authorization_request_endpoint":            iss + "/oauth2/par",
		"device_authorization_endpoint":                    iss + deviceAuthPath,
		"require_pushed_authorization_requests":            s.cfg.Provider.RequirePAR(),
		"token_endpoint_auth_signing_alg_values_supported": oauth.ClientAssertionAlgorithms,
		"claims_supported": []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce",
			"preferred_username", "name", "email", "email_verified", "groups"},
	})
}

// scopesSupported is the standard scopes and those the TokenServer describes: clients
// may be allowed others, but those are the ones it tells people about.
func (s *Server) scopesSupported() []string {
	scopes := append([]string{"openid", "offline_access"}, oauth.StandardScopes...)
	for sc := range s.cfg.ScopeDescriptions {
		if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	slices.Sort(scopes[2+len(oauth.StandardScopes):])
	return scopes
}

func (s *Server) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, s.cfg.JWKS)
}

// token serves the token endpoint. Identical refresh requests (same client
// credentials, same refresh token, same parameters) that arrive together or within
// recentWindow of each other are coalesced: one runs, and every caller gets its
// response, so a client that fires the same refresh twice gets one consistent pair of
// tokens instead of a rotation race. Across replicas the grace period does that job.
// A remembered response is replayed only while its access token is still valid: once
// the chain is revoked (or the grant expired, or the new refresh token was used), the
// request is handled afresh and gets what the store says, invalid_grant.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	switch gt := r.PostForm.Get("grant_type"); gt {
	case "", grantAuthorizationCode, grantClientCredentials, grantRefreshToken, oauth.GrantDeviceCode, oauth.GrantJWTBearer:
	default:
		s.writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "This server does not support grant_type "+strconv.Quote(gt)+".")
		return
	}
	if r.PostForm.Get("grant_type") != grantRefreshToken {
		s.cfg.Provider.Token(w, r)
		return
	}
	h := sha256.New()
	h.Write([]byte(r.Header.Get("Authorization")))
	keys := make([]string, 0, len(r.PostForm))
	for k := range r.PostForm {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range r.PostForm[k] {
			h.Write([]byte{0})
			h.Write([]byte(k + "=" + v))
		}
	}
	key := string(h.Sum(nil))
	if rec, ok := s.recent.get(key, time.Now()); ok {
		if s.cfg.Provider.Live(r.Context(), rec.accessToken) {
			s.cfg.Metrics.coalesced.Inc()
			rec.rec.copyTo(w)
			return
		}
		s.recent.forget(key)
	}
	leader := false
	v, _, shared := s.refreshes.Do(key, func() (any, error) {
		leader = true
		// The refresh runs to its end even if the client that happened to lead hangs
		// up: the identical requests waiting here share its answer, and a rotation cut
		// short by the hang-up could commit after the request has failed, so that
		// the caller's retry reads as reuse of a rotated token and, without a grace
		// period, revokes the whole chain. Bounded, since nothing is waiting for
		// it once every caller has gone.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), refreshLeaderTimeout)
		defer cancel()
		rec := newBuffered()
		s.cfg.Provider.Token(rec, r.WithContext(ctx))
		if rec.code == http.StatusOK {
			s.recent.put(key, rec, time.Now())
		}
		return rec, nil
	})
	if shared && !leader {
		s.cfg.Metrics.coalesced.Inc()
	}
	v.(*buffered).copyTo(w)
}

// refreshLeaderTimeout bounds a refresh that runs on after its caller hung up.
const refreshLeaderTimeout = 30 * time.Second

// recentWindow is how long a refresh response is replayed to identical requests that
// arrive just after it: a client firing the same refresh from several tabs or threads
// gets one consistent answer instead of tripping reuse detection. Reuse detection thus
// starts a second after a rotation even with no grace period.
const recentWindow = time.Second

// recentResponses remembers successful refresh responses for recentWindow, in memory
// only.
type recentResponses struct {
	window  time.Duration
	mu      sync.Mutex
	entries map[string]recentResponse
	swept   time.Time // when put last dropped expired entries
}

type recentResponse struct {
	rec *buffered
	at  time.Time
	// accessToken is the one rec carries, checked before each replay.
	accessToken string
}

func (rr *recentResponses) get(key string, now time.Time) (recentResponse, bool) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	e, ok := rr.entries[key]
	if !ok || now.Sub(e.at) > rr.window {
		return recentResponse{}, false
	}
	return e, true
}

func (rr *recentResponses) forget(key string) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	delete(rr.entries, key)
}

func (rr *recentResponses) put(key string, rec *buffered, now time.Time) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.entries == nil {
		rr.entries = map[string]recentResponse{}
	}
	// Expired entries go at most once a window: at more than 1024 refreshes a window,
	// sweeping at every put made each refresh walk the whole map (a profile of the
	// refresh benchmark had it at an eighth of the server's CPU). The map holds at
	// most two windows' worth.
	if len(rr.entries) > 1024 && now.Sub(rr.swept) > rr.window {
		rr.swept = now
		for k, e := range rr.entries {
			if now.Sub(e.at) > rr.window {
				delete(rr.entries, k)
			}
		}
	}
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(rec.body.Bytes(), &body) != nil || body.AccessToken == "" {
		return
	}
	rr.entries[key] = recentResponse{rec: rec, at: now, accessToken: body.AccessToken}
}

func (s *Server) userinfo(w http.ResponseWriter, r *http.Request) {
	sess, scopes, err := s.cfg.Provider.BearerSubject(r)
	if err != nil {
		code, name := oauth.ErrorStatus(err)
		if code == http.StatusInternalServerError {
			s.writeOAuthError(w, code, name, "")
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		s.writeOAuthError(w, http.StatusUnauthorized, "invalid_token", "The access token is missing, expired or revoked.")
		return
	}
	// UserInfo answers for tokens of an OpenID authentication (OIDC Core 5.3): a
	// client_credentials or JWT bearer token without openid names no signed-in user,
	// and an app that signs people in through /userinfo would take it for one.
	if !slices.Contains(scopes, "openid") {
		w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="openid"`)
		s.writeOAuthError(w, http.StatusForbidden, "insufficient_scope", "The access token was not granted the openid scope.")
		return
	}
	// The claims follow the scopes granted to this access token, as in the ID token.
	claims := oauth.Claims(sess.Subject, sess.Identity, scopes)
	claims["sub"], claims["preferred_username"] = sess.Subject, sess.Username
	writeJSON(w, http.StatusOK, claims)
}

// oauthEndpoint wraps an OAuth endpoint: it bounds and parses the body, and turns a
// 500 caused by an unreachable database into 503 temporarily_unavailable with
// Retry-After, so clients retry instead of giving up. Nothing is issued in that
// case: fosite writes the response only after the store accepted the token.
func (s *Server) oauthEndpoint(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if err := parseForm(r); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.writeOAuthError(w, http.StatusRequestEntityTooLarge, "invalid_request", "The request body is too large.")
				return
			}
			s.writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The request body is not a valid form.")
			return
		}
		// A token to revoke or introspect (or userinfo's access token) that is no
		// text is an invalid token, which RFC 7009, RFC 7662 and RFC 6750 answer as
		// such (the store finds no such token).
		if name, ok := notText(r.Form, "token", "access_token"); ok {
			s.writeOAuthError(w, http.StatusBadRequest, "invalid_request", notTextMessage(name))
			return
		}
		rec := newBuffered()
		h(rec, r)
		if r.Context().Err() != nil {
			// The client hung up and the store's calls were cancelled with its request
			// (fosite then answers 401 for a client it could not look up, or 5xx):
			// nobody reads this answer, the database is not to blame, and no server
			// error happened. 499, as nginx logs it, keeps it out of the 5xx the
			// alerts read.
			w.WriteHeader(statusClientClosedRequest)
			return
		}
		if rec.code >= 500 && s.fence.active() {
			// A request already running when the fence went up whose write came after
			// the marker: the guard refused it, nothing was issued, and a retry is
			// forwarded to the side that serves now.
			s.cfg.Log.Warn("a write met the upgrade fence", "path", r.URL.Path)
			w.Header().Set("Retry-After", "1")
			s.writeOAuthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", fenceRetry)
			return
		}
		// fosite reports a failed client lookup as invalid_client whatever the cause,
		// so a 401 also earns a check of the database.
		if rec.code >= 500 || rec.code == http.StatusUnauthorized {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			err := s.cfg.Store.Ping(ctx)
			cancel()
			if err != nil {
				s.cfg.Log.Warn("database unavailable", "path", r.URL.Path, "err", err)
				w.Header().Set("Retry-After", "1")
				s.writeOAuthError(w, http.StatusServiceUnavailable, "temporarily_unavailable",
					"The authorization server cannot reach its database; retry shortly.")
				return
			}
			if rec.code >= 500 {
				s.cfg.Log.Error("internal error", "path", r.URL.Path, "status", rec.code)
			}
		}
		rec.copyTo(w)
	}
}

// statusClientClosedRequest is nginx's status for a request whose client went away
// before the answer.
const statusClientClosedRequest = 499

// notText returns the first parameter of form, name or value, that is not text:
// invalid UTF-8 or a NUL byte, which no OAuth parameter holds and PostgreSQL cannot
// keep (the server stores a request's parameters with what it issues). Such a request
// is malformed (RFC 6749 section 5.2, invalid_request); answered later, it was a
// server error when the store refused it. exempt names parameters that are only
// looked up.
func notText(form url.Values, exempt ...string) (string, bool) {
	for name, values := range form {
		if !isText(name) {
			return name, true
		}
		if slices.Contains(exempt, name) {
			continue
		}
		for _, v := range values {
			if !isText(v) {
				return name, true
			}
		}
	}
	return "", false
}

// parseForm parses r's query and body into r.Form and r.PostForm, a
// multipart/form-data body included: ParseForm leaves one alone, fosite parses it
// later (ParseMultipartForm), and the checks in between (notText) would have seen
// none of its values. r.Body must be bounded (maxBody): the parts stay in memory.
func parseForm(r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return err
	}
	if err := r.ParseMultipartForm(maxBody); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		return err
	}
	return nil
}

// isText says whether v is text PostgreSQL can keep: valid UTF-8 without a NUL.
func isText(v string) bool { return utf8.ValidString(v) && !strings.ContainsRune(v, 0) }

func notTextMessage(name string) string {
	return fmt.Sprintf("The parameter %q is not text: it holds invalid UTF-8 or a NUL byte.", name)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeStatus(w, http.StatusOK, "ok")
}

// readyz fails while the database is unreachable, so the Service stops sending
// traffic to a replica that cannot serve it, and once the replica drains.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeStatus(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Store.Ping(ctx); err != nil {
		writeStatus(w, http.StatusServiceUnavailable, "database unavailable")
		return
	}
	writeStatus(w, http.StatusOK, "ok")
}

func writeStatus(w http.ResponseWriter, code int, status string) {
	writeJSON(w, code, map[string]string{"status": status})
}

func (s *Server) writeOAuthError(w http.ResponseWriter, code int, name, description string) {
	body := map[string]string{"error": name}
	if description != "" {
		body["error_description"] = description
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// buffered holds a response until the handler is done, so it can be replaced (503)
// or shared (coalesced refreshes).
type buffered struct {
	header http.Header
	code   int
	body   bytes.Buffer
	once   sync.Once
}

func newBuffered() *buffered { return &buffered{header: http.Header{}, code: http.StatusOK} }

func (b *buffered) Header() http.Header         { return b.header }
func (b *buffered) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *buffered) WriteHeader(code int)        { b.once.Do(func() { b.code = code }) }

func (b *buffered) copyTo(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	w.WriteHeader(b.code)
	_, _ = w.Write(b.body.Bytes())
}

// storeErrStatus maps store errors to HTTP statuses for the admin API.
func storeErrStatus(err error) int {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}
