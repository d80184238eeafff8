package oauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/handler/pkce"
	enigma "github.com/ory/fosite/token/hmac"
	"github.com/ory/fosite/token/jwt"

	"github.com/kubeoauth/kubeoauth/internal/netguard"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/store"
)

// Access token formats.
const (
	FormatOpaque = "opaque"
	FormatJWT    = "jwt"
)

// Config configures a Provider.
type Config struct {
	// Issuer is the public URL of the server, e.g. https://auth.example.com.
	Issuer                string
	AccessTokenLifespan   time.Duration
	RefreshTokenLifespan  time.Duration
	IDTokenLifespan       time.Duration
	AuthorizeCodeLifespan time.Duration
	// AccessTokenFormat is opaque (default) or jwt (RFC 9068).
	AccessTokenFormat string
	// HMACSecret signs opaque tokens; every replica must share it (32 bytes or more).
	HMACSecret []byte
	// PreviousHMACSecret still verifies tokens during a rotation; may be nil.
	PreviousHMACSecret []byte
	// SecretHasher checks client secrets against their stored hashes.
	SecretHasher *store.SecretHasher
	Keys         *signingkey.Keys
	// OptionalPKCE lets confidential clients use the authorization code without PKCE,
	// for legacy apps that cannot send a code challenge. RFC 9700 asks for PKCE from
	// every client, so it is off unless a TokenServer opts out.
	OptionalPKCE bool
	// JWKSFetch is where a client's jwks_uri (private_key_jwt) may be fetched from:
	// public addresses, plus the ranges it allows.
	JWKSFetch netguard.Policy
	// RequirePAR refuses authorization requests not pushed first (RFC 9126).
	RequirePAR bool
	// PARLifespan is how long a pushed request_uri may be used; 0 is fosite's 5 minutes.
	PARLifespan time.Duration
	// DeviceInterval is how long a device waits between polls (RFC 8628); 0 means
	// DefaultDeviceInterval. DeviceCodeLifespan is how long its codes live; 0 means
	// DefaultDeviceCodeLifespan.
	DeviceInterval     time.Duration
	DeviceCodeLifespan time.Duration
	// Log receives what the server cannot tell the client alone, such as a client
	// whose jwks_uri fails; nil discards it.
	Log *slog.Logger
}

// Storage is the token server's storage contract, declared here once: fosite's storage
// interfaces (this package is the one window onto fosite) plus store.Store, the
// fosite-free part. internal/store/postgres implements it; internal/store/storetest is
// its conformance suite; internal/tokenserver is given one.
type Storage interface {
	fosite.Storage
	oauth2.CoreStorage
	oauth2.TokenRevocationStorage
	openid.OpenIDConnectRequestStorage
	PKCEStorage
	fosite.PARStorage
	DeviceStorage
	store.Store
}

// PKCEStorage is fosite's pkce.PKCERequestStorage, restated so callers need not import
// fosite.
type PKCEStorage interface {
	GetPKCERequestSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error)
	CreatePKCERequestSession(ctx context.Context, signature string, requester fosite.Requester) error
	DeletePKCERequestSession(ctx context.Context, signature string) error
}

// Provider is the composed OAuth 2.0 / OpenID Connect provider.
type Provider struct {
	f     fosite.OAuth2Provider
	cfg   Config
	store Storage
	// enigma signs and checks device codes, as fosite's HMAC strategy does other codes.
	enigma *enigma.HMACStrategy
	// Hooks observe issued tokens for metrics; may be nil.
	OnTokenIssued func(grantType string)
}

// New composes the provider.
func New(cfg Config, st Storage) (*Provider, error) {
	if len(cfg.HMACSecret) < 32 {
		return nil, errors.New("the HMAC secret must be at least 32 bytes")
	}
	if cfg.Keys == nil || cfg.Keys.Current == nil {
		return nil, errors.New("a signing key is required")
	}
	if cfg.SecretHasher == nil {
		return nil, errors.New("a client-secret hasher is required")
	}
	u, err := url.Parse(cfg.Issuer)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("issuer %q must be an absolute URL", cfg.Issuer)
	}
	fc := &fosite.Config{
		AccessTokenLifespan:            cfg.AccessTokenLifespan,
		RefreshTokenLifespan:           cfg.RefreshTokenLifespan,
		IDTokenLifespan:                cfg.IDTokenLifespan,
		AuthorizeCodeLifespan:          cfg.AuthorizeCodeLifespan,
		IDTokenIssuer:                  cfg.Issuer,
		AccessTokenIssuer:              cfg.Issuer,
		TokenURL:                       cfg.Issuer + "/oauth2/token",
		GlobalSecret:                   cfg.HMACSecret,
		ScopeStrategy:                  scopeStrategy,
		AudienceMatchingStrategy:       fosite.DefaultAudienceMatchingStrategy,
		EnforcePKCEForPublicClients:    true,
		EnforcePKCE:                    !cfg.OptionalPKCE,
		EnablePKCEPlainChallengeMethod: false,
		ClientSecretsHasher:            secretHasher{cfg.SecretHasher},
		JWTScopeClaimKey:               jwt.JWTScopeFieldString,
		SendDebugMessagesToClients:     false,
		MinParameterEntropy:            fosite.MinParameterEntropy,
	}
	// RFC 9126: fosite's PAR handler and its check in NewAuthorizeRequest read these.
	fc.PushedAuthorizeRequestURIPrefix, fc.PushedAuthorizeContextLifespan = parPrefix, cfg.PARLifespan
	fc.IsPushedAuthorizeEnforced = cfg.RequirePAR
	// A client's jwks_uri is chosen by whoever registers the client, a tenant: fetched
	// with fosite's default client it would let a tenant make the server call cloud
	// metadata or cluster-internal services. fosite's JWKS strategy takes an HTTP
	// client, so ours dials through netguard, which checks the address connected to.
	fetch := retryablehttp.NewClient()
	fetch.HTTPClient = &http.Client{Transport: cappedBody{cfg.JWKSFetch.Transport()}, Timeout: 10 * time.Second}
	fetch.RetryMax, fetch.Logger = 1, nil
	fetch.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if errors.Is(err, netguard.ErrRefused) {
			return false, nil // refused now, refused on retry
		}
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	fc.HTTPClient = fetch
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fc.JWKSFetcherStrategy = newGuardedJWKS(fosite.NewDefaultJWKSFetcherStrategy(fosite.JWKSFetcherWithHTTPClient(fetch)), log)
	if cfg.PreviousHMACSecret != nil {
		fc.RotatedGlobalSecrets = [][]byte{cfg.PreviousHMACSecret}
	}
	if cfg.DeviceInterval <= 0 {
		cfg.DeviceInterval = DefaultDeviceInterval
	}
	if cfg.DeviceCodeLifespan <= 0 {
		cfg.DeviceCodeLifespan = DefaultDeviceCodeLifespan
	}
	keyGetter := func(context.Context) (any, error) { return cfg.Keys.Current.Private, nil }
	hmacStrategy := compose.NewOAuth2HMACStrategy(fc)
	var core oauth2.CoreStrategy = hmacStrategy
	if cfg.AccessTokenFormat == FormatJWT {
		core = compose.NewOAuth2JWTStrategy(keyGetter, hmacStrategy, fc)
	}
	strategy := &compose.CommonStrategy{
		CoreStrategy:               core,
		OpenIDConnectTokenStrategy: compose.NewOpenIDConnectStrategy(keyGetter, fc),
		Signer:                     &jwt.DefaultSigner{GetPrivateKey: keyGetter},
	}
	devices := &enigma.HMACStrategy{Config: fc}
	var composed *fosite.Fosite
	fc.ClientAuthenticationStrategy = clientAuthentication(&composed)
	f := compose.Compose(fc, st, strategy,
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OpenIDConnectExplicitFactory,
		compose.OpenIDConnectRefreshFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
		compose.OAuth2PKCEFactory,
		compose.PushedAuthorizeHandlerFactory,
		deviceFactory(st, devices, min(cfg.DeviceInterval/5, time.Second)),
		jwtBearerFactory(&jwtBearerKeys{jtis: st, jwks: fc.JWKSFetcherStrategy}),
	)
	for i, h := range fc.TokenEndpointHandlers {
		switch inner := h.(type) {
		case *oauth2.AuthorizeExplicitGrantHandler:
			h = codeReuse{inner, st}
		case *oauth2.RefreshTokenGrantHandler:
			h = refreshRevoked{inner}
		case *pkce.Handler:
			h = pkceCodeReuse{inner, st, st}
		}
		fc.TokenEndpointHandlers[i] = declineCheaply{h}
	}
	// Only fosite's own Store (client authentication, PAR) sees the scoped jtis: the
	// handlers keep st itself, whose optional interfaces (fosite's Transactional,
	// above all) a wrapper would hide from their type assertions.
	composed = f.(*fosite.Fosite)
	composed.Store = scopedAssertionJTIs{st}
	return &Provider{f: f, cfg: cfg, store: st, enigma: devices}, nil
}

// declineCheaply lets a token endpoint handler decline a request of another grant
// without building an error with a stack trace: fosite asks every handler to
// populate every token response, and its own handlers decline with
// errorsx.WithStack(ErrUnknownRequest), a stack walk each, five to a token (15 % of
// the server's CPU for a token in a profile of the token benchmark). Each
// of them declines exactly when CanHandleTokenEndpointRequest is false.
type declineCheaply struct{ fosite.TokenEndpointHandler }

func (h declineCheaply) PopulateTokenEndpointResponse(ctx context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	if !h.CanHandleTokenEndpointRequest(ctx, ar) {
		return fosite.ErrUnknownRequest
	}
	return h.TokenEndpointHandler.PopulateTokenEndpointResponse(ctx, ar, resp)
}

// Issuer is the configured issuer URL.
func (p *Provider) Issuer() string { return p.cfg.Issuer }

// Token serves the token endpoint (RFC 6749 section 3.2).
func (p *Provider) Token(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	sess := NewSession()
	ar, err := p.f.NewAccessRequest(ctx, r, sess)
	if err != nil {
		p.f.WriteAccessError(ctx, w, ar, err)
		return
	}
	grant := ar.GetGrantTypes()
	if grant.ExactOne("client_credentials") {
		// The client acts for itself: it is the subject, and gets the scopes and
		// audience it asked for that it is allowed.
		client := ar.GetClient()
		s := newSubjectSession(p.cfg.Issuer, client.GetID(), "", p.cfg.Keys.Current.ID, time.Now().UTC(),
			sessionKind{jwtAccess: p.cfg.AccessTokenFormat == FormatJWT})
		s.ExpiresAt = sess.ExpiresAt // set by fosite while handling the request
		*sess = *s
		for _, scope := range ar.GetRequestedScopes() {
			if fosite.ExactScopeStrategy(client.GetScopes(), scope) {
				ar.GrantScope(scope)
			}
		}
		for _, aud := range ar.GetRequestedAudience() {
			ar.GrantAudience(aud)
		}
	}
	if grant.ExactOne(GrantJWTBearer) {
		// The assertion's subject: fosite set it on the session; the rest of the
		// session (JWT access token claims) is built as for client_credentials.
		s := newSubjectSession(p.cfg.Issuer, sess.Subject, "", p.cfg.Keys.Current.ID, time.Now().UTC(),
			sessionKind{jwtAccess: p.cfg.AccessTokenFormat == FormatJWT})
		s.ExpiresAt = sess.ExpiresAt
		*sess = *s
	}
	if err := p.limitToGrant(ctx, ar); err != nil {
		p.f.WriteAccessError(ctx, w, ar, err)
		return
	}
	if err := p.foreignAudience(ctx, ar.GetClient().GetID(), ar.GetGrantedAudience()); err != nil {
		p.f.WriteAccessError(ctx, w, ar, err)
		return
	}
	if s, ok := ar.GetSession().(*Session); ok && p.cfg.AccessTokenFormat == FormatJWT {
		// RFC 9068 section 2.2 requires it, and fosite does not add it: without it a
		// resource server cannot check which client a JWT access token was issued
		// to, as docs/security.md tells it to.
		s.GetJWTClaims()
		s.JWTClaims.Add("client_id", ar.GetClient().GetID())
	}
	resp, err := p.f.NewAccessResponse(ctx, ar)
	if errors.Is(err, store.ErrClientGone) {
		err = fosite.ErrInvalidClient.WithHint("The client no longer exists.")
	}
	if err != nil {
		p.f.WriteAccessError(ctx, w, ar, err)
		return
	}
	if p.OnTokenIssued != nil && len(grant) > 0 {
		p.OnTokenIssued(grant[0])
	}
	p.f.WriteAccessResponse(ctx, w, ar, resp)
}

func errGrantGone() error {
	return fosite.ErrInvalidGrant.WithHint("The consent grant behind this token has expired or was revoked.")
}

// limitToGrant checks, for a code exchange or a refresh, that the consent grant the
// tokens belong to still stands, and makes the tokens about to be issued expire by
// its current expiry: a refresh never extends a chain past the grant, and a grant
// whose expiry was moved earlier since the code or the last refresh is obeyed.
func (p *Provider) limitToGrant(ctx context.Context, ar fosite.AccessRequester) error {
	sess, ok := ar.GetSession().(*Session)
	if !ok || sess.GrantID == "" {
		return nil
	}
	now := time.Now().UTC()
	var expiresAt time.Time
	if sess.GrantStanding != nil {
		// Read with the token, in this request.
		expiresAt = sess.GrantStanding.ExpiresAt
	} else {
		g, err := p.store.GetGrantByID(ctx, sess.GrantID)
		if errors.Is(err, store.ErrNotFound) {
			return errGrantGone()
		}
		if err != nil {
			return fosite.ErrServerError.WithWrap(err)
		}
		expiresAt = g.ExpiresAt
	}
	if !expiresAt.IsZero() && !now.Before(expiresAt) {
		return errGrantGone()
	}
	sess.limitTo(expiresAt, p.cfg.IDTokenLifespan, now)
	sess.setIDTokenClaims(ar.GetGrantedScopes())
	return nil
}

// Live reports whether an access token issued by this server is still valid: not
// expired, revoked, rotated away, nor under an expired or revoked grant.
func (p *Provider) Live(ctx context.Context, accessToken string) bool {
	_, _, err := p.f.IntrospectToken(ctx, accessToken, fosite.AccessToken, NewSession())
	return err == nil
}

// Introspect serves RFC 7662 introspection; the caller authenticates as a client,
// with HTTP Basic, fosite's one client authentication there.
//
// fosite also takes any live access token as the caller's credentials (a bearer
// Authorization header, or an access_token parameter): whoever holds one, a public
// client's user included, could then learn of any token whose it is, for which
// client and scopes. RFC 7662 wants the caller to be a protected resource the
// server authorized, so such a request is refused (401). And a refresh token is
// shown active to its own client only: it goes to no resource server, and another
// client that learnt one (a tenant's, of another tenant's user) must not learn
// from it.
func (p *Provider) Introspect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if fosite.AccessTokenFromRequest(r) != "" {
		p.f.WriteIntrospectionError(ctx, w, fosite.ErrRequestUnauthorized.WithHint(
			"Authenticate as a client, with HTTP Basic: a bearer token is not taken as the caller's credentials here."))
		return
	}
	ir, err := p.f.NewIntrospectionRequest(ctx, r, NewSession())
	if err != nil {
		p.f.WriteIntrospectionError(ctx, w, err)
		return
	}
	if ir.GetTokenUse() == fosite.RefreshToken {
		caller, _, _ := r.BasicAuth()
		if id, err := url.QueryUnescape(caller); err != nil || id != ir.GetAccessRequester().GetClient().GetID() {
			ir = &fosite.IntrospectionResponse{Active: false}
		}
	}
	p.f.WriteIntrospectionResponse(ctx, w, ir)
}

// Revoke serves RFC 7009 revocation. A revocation the store could not commit (the
// database unreachable, or a COMMIT whose wait for a synchronous standby was cut
// short) is answered 503, which RFC 7009 section 2.2 tells the client to take as "the
// token still exists; retry": fosite answers 200 for it, as for a token already gone,
// and a client would then stop retrying a revocation that did not happen, or that a
// failover could undo.
func (p *Provider) Revoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	err := p.f.NewRevocationRequest(ctx, r)
	if errors.Is(err, fosite.ErrTemporarilyUnavailable) {
		w.Header().Set("Retry-After", "1")
		p.f.WriteAccessError(ctx, w, nil, err)
		return
	}
	p.f.WriteRevocationResponse(ctx, w, err)
}

// BearerSubject validates an access token from an Authorization: Bearer header and
// returns its session, for userinfo. err is an RFC 6750 error.
func (p *Provider) BearerSubject(r *http.Request) (*Session, []string, error) {
	token := fosite.AccessTokenFromRequest(r)
	if token == "" {
		return nil, nil, fosite.ErrRequestUnauthorized.WithHint("A bearer access token is required.")
	}
	sess := NewSession()
	_, ar, err := p.f.IntrospectToken(r.Context(), token, fosite.AccessToken, sess)
	if err != nil {
		return nil, nil, err
	}
	return sess, ar.GetGrantedScopes(), nil
}

// secretHasher is fosite's ClientSecretsHasher over store.SecretHasher (see there
// why not bcrypt).
type secretHasher struct{ h *store.SecretHasher }

func (s secretHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	return s.h.Hash(string(data)), nil
}

func (s secretHasher) Compare(_ context.Context, hash, data []byte) error {
	if !s.h.Verify(hash, string(data)) {
		return errors.New("secret mismatch")
	}
	return nil
}

// ErrorDescription is what an error says to a person: its description and hint.
func ErrorDescription(err error) string {
	var rfc *fosite.RFC6749Error
	if errors.As(err, &rfc) {
		return rfc.GetDescription()
	}
	return "The request could not be processed."
}

// ErrorStatus maps an error from this package to an HTTP status and RFC 6749 code.
func ErrorStatus(err error) (int, string) {
	var rfc *fosite.RFC6749Error
	if errors.As(err, &rfc) {
		return rfc.CodeField, rfc.ErrorField
	}
	return http.StatusInternalServerError, "server_error"
}
