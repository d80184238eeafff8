package tokenserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/netguard"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/pages"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// Options are everything `tokenserver serve` is configured with (flags and
// environment, see cmd/tokenserver).
type Options struct {
	DSN            string
	Issuer         string
	PublicListener net.Listener
	AdminListener  net.Listener
	// MetricsListener serves /metrics; nil serves no metrics.
	MetricsListener net.Listener
	AdminToken      string
	SigningKeyFile  string
	// SigningAlgorithm, when set, must be the signing key's (ES256 or RS256): a check
	// that the mounted key is the one the TokenServer asks for.
	SigningAlgorithm       string
	PreviousSigningKeyFile string
	HMACSecret             []byte
	// SecretHashKey keys the hashes of client secrets (32+ bytes, shared by every
	// replica); empty means one derived from HMACSecret.
	SecretHashKey         []byte
	AccessTokenFormat     string
	AccessTokenLifespan   time.Duration
	RefreshTokenLifespan  time.Duration
	IDTokenLifespan       time.Duration
	AuthorizeCodeLifespan time.Duration
	RefreshGracePeriod    time.Duration
	ShutdownTimeout       time.Duration
	// ShutdownDelay is how long the server goes on serving after SIGTERM, with
	// readiness failing, before it stops accepting: the time endpoints and load
	// balancers take to stop sending it new connections.
	ShutdownDelay   time.Duration
	JanitorInterval time.Duration
	// UsersFile lists who may sign in (htpasswd lines or a YAML list, see LoadUsers); may be empty. It
	// is read again when it changes.
	UsersFile string
	// Upstream, when set, signs people in through another OpenID provider as well
	// (or instead, without a UsersFile). It is discovered on first use.
	Upstream *UpstreamOIDC
	// LoginThrottle limits failed sign-ins; zero means DefaultLoginThrottle.
	LoginThrottle LoginThrottle
	// MaxConcurrentLogins bounds concurrent password checks; zero means one per CPU.
	MaxConcurrentLogins int
	// ClientIPHeader and ClientIPTrustedProxies: see Config. A header needs at least
	// one trusted proxy.
	ClientIPHeader         string
	ClientIPTrustedProxies []netip.Prefix
	// OptionalPKCE lets confidential clients skip PKCE (legacy apps).
	OptionalPKCE bool
	// RequirePAR refuses authorization requests not pushed first (RFC 9126).
	RequirePAR bool
	// PARLifespan is how long a pushed request_uri may be used; 0 is 5 minutes.
	PARLifespan time.Duration
	// DeviceInterval and DeviceCodeLifespan: the device grant's polling interval and
	// code lifespan (RFC 8628); 0 means 5 seconds and 10 minutes.
	DeviceInterval, DeviceCodeLifespan time.Duration
	// ScopeDescriptions are shown on the consent page.
	ScopeDescriptions map[string]string
	// DisplayName and LogoURL brand every page (pages.ParseBrand checks them).
	DisplayName, LogoURL string
	// TemplatesDir holds templates that replace built-in ones of the same file name
	// (a mounted ConfigMap); empty: the built-in pages. A template that cannot be
	// used fails the start, naming its file.
	TemplatesDir string
	// RefreshCoalesceWindow: see Config; 0 means a second.
	RefreshCoalesceWindow time.Duration
	Log                   *slog.Logger
	// TokenMiddleware: see Config (test builds only).
	TokenMiddleware func(http.Handler) http.Handler
	// JWKSFetchAllow are internal ranges a client's jwks_uri may still resolve to
	// (netguard); public addresses are always allowed.
	JWKSFetchAllow []netip.Prefix
	// MaxConnectionAge: a public connection older than this is closed after its next
	// response, so keep-alive clients follow the Service to the pods that serve now
	// (connage.go); 0 keeps connections for as long as the client does.
	MaxConnectionAge time.Duration
	// FenceMaxHold: see Config; 0 means DefaultFenceMaxHold.
	FenceMaxHold time.Duration
	// CommitTimeout bounds each wait for a database COMMIT; 0 means
	// postgres.DefaultCommitTimeout (tests shorten it).
	CommitTimeout time.Duration
	// FencePollInterval: see Config; 0 means FencePollInterval.
	FencePollInterval time.Duration
}

// errClientIPHeaderUntrusted: a client-address header taken from anyone would let
// every guess come from a new address.
var errClientIPHeaderUntrusted = errors.New("--client-ip-header needs --client-ip-trusted-proxies: the addresses " +
	"of the proxies (ingress) allowed to set it, as CIDRs; anyone else could set the header to spread their " +
	"sign-in attempts over made-up addresses")

// check refuses options the server cannot run with, before anything starts.
func (o Options) check() error {
	if o.RefreshGracePeriod < 0 || o.RefreshGracePeriod > 5*time.Minute {
		return fmt.Errorf("refresh grace period %s: must be between 0 and 5m", o.RefreshGracePeriod)
	}
	if o.MaxConnectionAge < 0 {
		return fmt.Errorf("max connection age %s: must be 0 (no limit) or more", o.MaxConnectionAge)
	}
	if o.AdminToken == "" {
		return errors.New("an admin token is required (--admin-token-file)")
	}
	// RFC 8628 gives the interval in whole seconds: 500ms would be sent as 0, and
	// slow_down would never come.
	if o.DeviceInterval != 0 && (o.DeviceInterval < time.Second || o.DeviceInterval%time.Second != 0) {
		return fmt.Errorf("device poll interval %s (--device-poll-interval): must be a whole number of seconds, at least 1s",
			o.DeviceInterval)
	}
	if o.ClientIPHeader != "" && len(o.ClientIPTrustedProxies) == 0 {
		return errClientIPHeaderUntrusted
	}
	return nil
}

// Serve runs the token server until ctx ends, then drains: readiness fails and it
// goes on serving for ShutdownDelay, then stops accepting, lets in-flight requests
// finish within ShutdownTimeout, and returns.
func Serve(ctx context.Context, o Options) error {
	if err := o.check(); err != nil {
		return err
	}
	brand, pageSet, err := loadPages(o)
	if err != nil {
		return err
	}
	log := o.Log
	metrics := NewMetrics()
	st, err := postgres.Open(ctx, o.DSN, postgres.Options{
		RefreshGracePeriod: o.RefreshGracePeriod,
		Hooks: postgres.Hooks{
			RefreshGraceUse: metrics.graceUses.Inc,
			ChainRevoked:    metrics.chainRevocation.Inc,
			DatabaseError:   metrics.dbErrors.Inc,
			Event:           metrics.countEvent,
			GroupCommit:     metrics.groupCommitHooks(),
		},
		Log:           log,
		CommitTimeout: o.CommitTimeout,
	})
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	keys, err := signingkey.Load(o.SigningKeyFile, o.PreviousSigningKeyFile)
	if err != nil {
		return err
	}
	if o.SigningAlgorithm != "" && o.SigningAlgorithm != keys.Current.Algorithm {
		return fmt.Errorf("signing algorithm %s was asked for, but %s holds a %s key", o.SigningAlgorithm,
			o.SigningKeyFile, keys.Current.Algorithm)
	}
	hashKey := o.SecretHashKey
	if len(hashKey) == 0 {
		hashKey = store.DeriveSecretHashKey(o.HMACSecret)
	}
	hasher, err := store.NewSecretHasher(hashKey)
	if err != nil {
		return err
	}
	provider, err := oauth.New(oauth.Config{
		Issuer: strings.TrimSuffix(o.Issuer, "/"), AccessTokenFormat: o.AccessTokenFormat, HMACSecret: o.HMACSecret, Keys: keys,
		SecretHasher:        hasher,
		AccessTokenLifespan: o.AccessTokenLifespan, RefreshTokenLifespan: o.RefreshTokenLifespan,
		IDTokenLifespan: o.IDTokenLifespan, AuthorizeCodeLifespan: o.AuthorizeCodeLifespan, OptionalPKCE: o.OptionalPKCE,
		RequirePAR: o.RequirePAR, PARLifespan: o.PARLifespan,
		DeviceInterval: o.DeviceInterval, DeviceCodeLifespan: o.DeviceCodeLifespan,
		JWKSFetch: netguard.Policy{Allow: o.JWKSFetchAllow}, Log: log,
	}, st)
	if err != nil {
		return err
	}
	provider.OnTokenIssued = func(gt string) { metrics.tokensIssued.WithLabelValues(gt).Inc() }
	users, err := OpenUsers(o.UsersFile, log)
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	events := NewBroadcaster()
	srv := New(Config{Provider: provider, Store: st, Metrics: metrics, Log: log, AdminToken: o.AdminToken,
		SigningAlgorithm: keys.Current.Algorithm, JWKS: keys.JWKS(), Events: events, Users: users,
		ScopeDescriptions: o.ScopeDescriptions, Pages: pageSet, Brand: brand, CookieSecret: o.HMACSecret, SecretHasher: hasher,
		SecureCookies: strings.HasPrefix(o.Issuer, "https://"), RefreshCoalesceWindow: o.RefreshCoalesceWindow,
		LoginThrottle: o.LoginThrottle, MaxConcurrentLogins: o.MaxConcurrentLogins, ClientIPHeader: o.ClientIPHeader,
		ClientIPTrustedProxies: o.ClientIPTrustedProxies, TokenMiddleware: o.TokenMiddleware,
		ReadFence: st.ReadFence, FenceMaxHold: o.FenceMaxHold, FencePollInterval: o.FencePollInterval, Upstream: o.Upstream})

	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	go func() {
		if err := st.Follow(bg, events.Notify); err != nil {
			log.Error("event listener stopped", "err", err)
		}
	}()
	go RunJanitor(bg, st, o.JanitorInterval, 500, log)
	go srv.discoverUpstream(bg)
	// A server that starts while its database is fenced holds from its first request.
	srv.pollFence(bg)
	go srv.watchFence(bg)

	public := &http.Server{Handler: srv.PublicHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 90 * time.Second}
	if o.MaxConnectionAge > 0 {
		public.Handler, public.ConnContext = limitConnectionAge(public.Handler), connDeadline(o.MaxConnectionAge)
	}
	go srv.closeIdleWhileForwarding(bg, public)
	servers := []*http.Server{
		public,
		{Handler: srv.AdminHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second},
	}
	listeners := []net.Listener{o.PublicListener, o.AdminListener}
	if o.MetricsListener != nil {
		servers = append(servers, &http.Server{Handler: srv.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second})
		listeners = append(listeners, o.MetricsListener)
	}
	errs := make(chan error, len(servers))
	for i, hs := range servers {
		go func() {
			if err := hs.Serve(listeners[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- err
			}
		}()
	}
	log.Info("token server started", "issuer", o.Issuer, "public", o.PublicListener.Addr().String(),
		"admin", o.AdminListener.Addr().String(), "accessTokenFormat", o.AccessTokenFormat, "signing", keys.Current.Algorithm)
	select {
	case <-ctx.Done():
	case err := <-errs:
		return err
	}
	// Kubernetes sends SIGTERM and withdraws the pod's endpoints at the same time;
	// kube-proxy, ingresses and our port-forward see the withdrawal a moment later.
	// A connection they route here meanwhile would be reset if the listener were
	// closed now, so the server keeps serving, not ready, for the delay.
	srv.Drain()
	if o.ShutdownDelay > 0 {
		log.Info("shutting down: not ready, still serving", "delay", o.ShutdownDelay)
		// Every response now says Connection: close, so a busy keep-alive client
		// leaves with its next answer, race-free. A connection still idle a moment
		// later belongs to a quiet client: it is closed then, so that client's next
		// request opens a connection to another replica rather than waiting on this
		// one until it exits. Closing every idle connection at once would race with the
		// requests that busy clients are just writing into them, and fail those.
		quiet := time.AfterFunc(min(keepAliveGrace, o.ShutdownDelay/2), func() {
			for _, hs := range servers {
				hs.SetKeepAlivesEnabled(false)
			}
		})
		select {
		case <-time.After(o.ShutdownDelay):
		case err := <-errs:
			quiet.Stop()
			return err
		}
	}
	log.Info("draining", "timeout", o.ShutdownTimeout)
	drain, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	for _, hs := range servers {
		if err := hs.Shutdown(drain); err != nil {
			log.Warn("shutdown", "err", err)
		}
	}
	log.Info("stopped")
	return nil
}

// loadPages checks the brand and the templates before anything starts: a page that
// cannot be shown fails the start, naming what is wrong.
func loadPages(o Options) (pages.Brand, *pages.Set, error) {
	brand, err := pages.ParseBrand(o.DisplayName, o.LogoURL)
	if err != nil {
		return pages.Brand{}, nil, err
	}
	set, err := pages.Load(o.TemplatesDir)
	if err != nil {
		return pages.Brand{}, nil, fmt.Errorf("templates in %s: %w", o.TemplatesDir, err)
	}
	return brand, set, nil
}

// keepAliveGrace is how long a draining replica leaves idle keep-alive connections
// open before closing them: a client that sends a request within it gets an answer
// with Connection: close instead.
const keepAliveGrace = time.Second

// ReadSecretFile reads a secret from a mounted file, trimming a trailing newline.
func ReadSecretFile(path string) (string, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- a path the operator mounts
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(data), "\r\n"), nil
}
