package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/jwt"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/rfc7523"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// The JWT bearer grant (RFC 7523) is fosite's handler. fosite looks an assertion's
// keys up by issuer and subject alone, as if trust were the whole server's; here it
// is a client's (its OAuthClient's spec.jwtBearer), so jwtBearerKeys answers fosite's
// lookups from the trust of the client that authenticated, which fosite puts on the
// request in ctx before any handler runs.

// JWTBearerClient is a client that may carry JWT bearer trust (an adminapi.JWTBearer
// document); internal/store/postgres's Client is one.
type JWTBearerClient interface {
	GetJWTBearer() json.RawMessage
	// SkipsConsent is the client's first-party standing: skipConsent, which the
	// operator sets only for clients of the TokenServer's firstPartyNamespaces.
	SkipsConsent() bool
}

// jtiStorage is where assertion IDs are kept against replay: the store's table of
// client assertion IDs, which fosite's ClientManager already writes for private_key_jwt.
type jtiStorage interface {
	ClientAssertionJWTValid(ctx context.Context, jti string) error
	SetClientAssertionJWT(ctx context.Context, jti string, exp time.Time) error
}

// jwtBearerJTIPrefix keeps assertion IDs apart from client assertions' in the one
// table: a jti seen as one is no replay of the other.
const jwtBearerJTIPrefix = "jwt-bearer:" // #nosec G101 -- a prefix, not a credential

type jwtBearerKeys struct {
	jtis jtiStorage
	jwks fosite.JWKSFetcherStrategy
}

var _ rfc7523.RFC7523KeyStorage = (*jwtBearerKeys)(nil)

// errNotTrusted is what fosite turns into invalid_grant (no key for issuer and
// subject).
var errNotTrusted = errors.New("the client does not trust this issuer for this subject")

// trust is the authenticated client's trusted issuer for issuer that may assert
// subject, and the client.
func (k *jwtBearerKeys) trust(ctx context.Context, issuer, subject string) (*adminapi.TrustedJWTIssuer, fosite.Client, error) {
	ar, ok := ctx.Value(fosite.AccessRequestContextKey).(fosite.AccessRequester)
	if !ok || ar.GetClient() == nil {
		return nil, nil, errNotTrusted
	}
	c, ok := ar.GetClient().(JWTBearerClient)
	if !ok || len(c.GetJWTBearer()) == 0 {
		return nil, nil, errNotTrusted
	}
	var jb adminapi.JWTBearer
	if err := json.Unmarshal(c.GetJWTBearer(), &jb); err != nil {
		return nil, nil, fmt.Errorf("the client's jwtBearer cannot be read: %w", err)
	}
	for i := range jb.TrustedIssuers {
		t := &jb.TrustedIssuers[i]
		if t.Issuer == issuer && (t.AllowAnySubject || slices.Contains(t.Subjects, subject)) {
			return t, ar.GetClient(), nil
		}
	}
	return nil, nil, errNotTrusted
}

func (k *jwtBearerKeys) GetPublicKeys(ctx context.Context, issuer, subject string) (*jose.JSONWebKeySet, error) {
	t, _, err := k.trust(ctx, issuer, subject)
	if err != nil {
		return nil, err
	}
	if t.JWKSURI != "" {
		// Through the same guarded fetcher as clients' jwks_uri (netguard).
		return k.jwks.Resolve(ctx, t.JWKSURI, false)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(t.JWKS, &set); err != nil {
		return nil, fmt.Errorf("the trusted issuer's jwks cannot be read: %w", err)
	}
	return &set, nil
}

func (k *jwtBearerKeys) GetPublicKey(ctx context.Context, issuer, subject, kid string) (*jose.JSONWebKey, error) {
	set, err := k.GetPublicKeys(ctx, issuer, subject)
	if err != nil {
		return nil, err
	}
	if keys := set.Key(kid); len(keys) > 0 {
		return &keys[0], nil
	}
	return nil, fmt.Errorf("no key %q among the trusted issuer's", kid)
}

// GetPublicKeyScopes is the scopes the issuer may give that the client may have: the
// CRD and the admin API refuse others, and a client whose scopes shrank since is
// obeyed.
func (k *jwtBearerKeys) GetPublicKeyScopes(ctx context.Context, issuer, subject, _ string) ([]string, error) {
	t, c, err := k.trust(ctx, issuer, subject)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range t.Scopes {
		if slices.Contains(c.GetScopes(), s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// assertionIssuerKey holds, in the ctx fosite's handler passes to jwtBearerKeys, the
// iss of the assertion being handled (see jwtBearerHandler).
type assertionIssuerKey struct{}

// jtiKey is where jti is kept: per client and issuer. A jti is unique only per
// issuer (RFC 7519), and CI systems use predictable ones (run numbers): kept
// server-wide, one tenant's assertion with jti run-42 would spend another team's.
// The client is part of it too, so that no client's use spends another's assertion
// even from one issuer; the pair is hashed to bound the key's length.
func jtiKey(ctx context.Context, jti string) string {
	clientID := ""
	if ar, ok := ctx.Value(fosite.AccessRequestContextKey).(fosite.AccessRequester); ok && ar.GetClient() != nil {
		clientID = ar.GetClient().GetID()
	}
	issuer, _ := ctx.Value(assertionIssuerKey{}).(string)
	sum := sha256.Sum256([]byte(clientID + "\x00" + issuer))
	return jwtBearerJTIPrefix + hex.EncodeToString(sum[:16]) + ":" + jti
}

func (k *jwtBearerKeys) IsJWTUsed(ctx context.Context, jti string) (bool, error) {
	err := k.jtis.ClientAssertionJWTValid(ctx, jtiKey(ctx, jti))
	if errors.Is(err, fosite.ErrJTIKnown) {
		return true, nil
	}
	return false, err
}

// MarkJWTUsedForTime records jti atomically: of two requests racing with one
// assertion, the second gets fosite.ErrJTIKnown (see jwtBearerHandler).
func (k *jwtBearerKeys) MarkJWTUsedForTime(ctx context.Context, jti string, exp time.Time) error {
	return k.jtis.SetClientAssertionJWT(ctx, jtiKey(ctx, jti), exp)
}

// jwtBearerHandler is fosite's, with a replayed assertion answered invalid_grant
// (RFC 7523 section 3.1) whether fosite found the jti before marking it (its jti_known)
// or while marking it, racing another request (which it would answer server_error).
type jwtBearerHandler struct{ *rfc7523.Handler }

func (h jwtBearerHandler) HandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) error {
	if !h.CanHandleTokenEndpointRequest(ctx, ar) {
		return fosite.ErrUnknownRequest
	}
	if err := jwtBearerAllowed(ar.GetClient()); err != nil {
		return err
	}
	// Checked before fosite's handler marks the jti, so that a refused request does
	// not spend the assertion.
	if err := fosite.DefaultAudienceMatchingStrategy(ar.GetClient().GetAudience(), ar.GetRequestedAudience()); err != nil {
		return err
	}
	claims := unverifiedClaims(ar.GetRequestForm().Get("assertion"))
	if err := notIssuedLater(claims, time.Now()); err != nil {
		return err
	}
	// JSON allows a NUL byte (\u0000), which the store cannot keep: the jti is kept
	// against replay, the subject with the token.
	if strings.ContainsRune(claims.ID, 0) || strings.ContainsRune(claims.Subject, 0) {
		return fosite.ErrInvalidGrant.WithHint("The assertion's jti or sub holds a NUL byte.")
	}
	// fosite verifies the assertion before it looks at the jti: by then the issuer
	// in ctx is the verified one.
	err := h.Handler.HandleTokenEndpointRequest(context.WithValue(ctx, assertionIssuerKey{}, claims.Issuer), ar)
	if errors.Is(err, fosite.ErrJTIKnown) {
		return fosite.ErrInvalidGrant.WithHint("The assertion was used before: its jti has been seen.")
	}
	if err != nil {
		return err
	}
	return grantRequestedAudience(ar)
}

// assertionClockSkew is how far ahead of this server's clock an issuer's may run.
const assertionClockSkew = time.Minute

// unverifiedClaims are the assertion's claims, unverified (none when it cannot be
// read: fosite then answers invalid_grant). They are used only to refuse, or as
// keys that fosite's verification then vouches for.
func unverifiedClaims(assertion string) jwt.Claims {
	var claims jwt.Claims
	if token, err := jwt.ParseSigned(assertion); err == nil {
		_ = token.UnsafeClaimsWithoutVerification(&claims)
	}
	return claims
}

// notIssuedLater refuses an assertion whose iat is in the future (RFC 7523 section 3,
// item 6, lets the server refuse one issued unreasonably far in the past or future).
// fosite checks only that exp is at most 24 hours after iat, so an iat years ahead
// made an assertion that works for years, and a jti row the janitor would keep as
// long.
func notIssuedLater(claims jwt.Claims, now time.Time) error {
	if claims.IssuedAt == nil {
		return nil
	}
	if iat := claims.IssuedAt.Time(); iat.After(now.Add(assertionClockSkew)) {
		return fosite.ErrInvalidGrant.WithHintf("The assertion's iat (%s) is in the future.", iat.UTC().Format(time.RFC3339))
	}
	return nil
}

// grantRequestedAudience replaces the audience fosite granted, the assertion's aud
// (which names this server, and whatever else the issuer put there), with the
// audience the client asked for, checked above against its spec.audience as for the
// other grants. Else an assertion's aud of "kubernetes" would make a JWT access token
// that a kube-apiserver trusting this issuer accepts, and the token endpoint's URL in
// every token's aud would make it an assertion for another client trusting this
// server.
func grantRequestedAudience(ar fosite.AccessRequester) error {
	r, ok := ar.(*fosite.AccessRequest)
	if !ok {
		return fosite.ErrServerError.WithDebugf("unexpected access request type %T", ar)
	}
	r.GrantedAudience = fosite.Arguments{}
	for _, aud := range ar.GetRequestedAudience() {
		ar.GrantAudience(aud)
	}
	return nil
}

// jwtBearerAllowed refuses the grant to a client the platform team has not made
// first-party, and to a public one. A token from this grant carries a subject the
// issuer chose, with no user's consent: a tenant trusting its own key could name
// any user. Only the platform team decides which namespaces are first-party, as it
// does for skipping consent, which is the same trust. The CRD and the admin API
// refuse both cases; this catches a client whose namespace lost the first-party
// label, and clients registered before that rule. A public client would make the
// assertion its only credential: anyone holding one (a CI issuer lets any
// repository mint tokens for any audience) would get tokens.
func jwtBearerAllowed(c fosite.Client) error {
	if c.IsPublic() {
		return fosite.ErrUnauthorizedClient.WithHint("A public client cannot use the JWT bearer grant: " +
			"the assertion would be its only credential.")
	}
	if jc, ok := c.(JWTBearerClient); !ok || !jc.SkipsConsent() {
		return fosite.ErrUnauthorizedClient.WithHint("The JWT bearer grant is for first-party clients only " +
			"(skipConsent, in one of the TokenServer's firstPartyNamespaces).")
	}
	return nil
}

// jwtBearerFactory composes fosite's RFC 7523 handler over jwtBearerKeys.
func jwtBearerFactory(keys *jwtBearerKeys) func(fosite.Configurator, any, any) any {
	return func(config fosite.Configurator, st any, strategy any) any {
		both := struct {
			rfc7523.RFC7523KeyStorage
			oauth2.AccessTokenStorage
		}{keys, st.(oauth2.AccessTokenStorage)}
		return jwtBearerHandler{compose.RFC7523AssertionGrantFactory(exactScopes{config}, both, strategy).(*rfc7523.Handler)}
	}
}

// exactScopes is the server's configuration with fosite's exact scope matching, which
// fosite's handler checks the requested scopes with against the trust's
// (GetPublicKeyScopes). The server-wide strategy lets any list holding openid give
// profile, email and groups too: the standard claims a user consents to, which here
// no one does, so this grant gives only what the trust lists.
type exactScopes struct{ fosite.Configurator }

func (exactScopes) GetScopeStrategy(context.Context) fosite.ScopeStrategy {
	return fosite.ExactScopeStrategy
}
