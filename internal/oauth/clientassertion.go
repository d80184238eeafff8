package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"time"

	"github.com/ory/fosite"
)

// clientAssertionType is the client_assertion_type of private_key_jwt (RFC 7523
// section 2.2).
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// clientAssertionJTIPrefix keeps the IDs of private_key_jwt client assertions apart
// from the JWT bearer grant's (jwtBearerJTIPrefix) in their one table.
const clientAssertionJTIPrefix = "client-assertion:" // #nosec G101 -- a prefix, not a credential

// assertionClientKey holds, in the ctx fosite's client authentication passes to the
// store, the client a client_assertion names (its sub).
type assertionClientKey struct{}

// scopedAssertionJTIs is the store as fosite's client authentication sees it, with
// the jti of a private_key_jwt assertion kept per client. fosite keys it by the jti
// alone, server-wide: a jti is unique only per issuer (RFC 7523 section 3, the client
// is the issuer), so one tenant's client signing its own assertions with the jti
// another tenant's client uses next (a run number, a counter) refused that client's
// authentication as a replay (jti_known). The key is a hash of both, which also keeps
// a jti the table's text cannot hold (a NUL byte, which JSON allows) or of any
// length to a fixed 64 characters.
type scopedAssertionJTIs struct{ Storage }

// assertionJTIKey is where the jti of ctx's client assertion is kept.
func assertionJTIKey(ctx context.Context, jti string) string {
	client, _ := ctx.Value(assertionClientKey{}).(string)
	sum := sha256.Sum256([]byte(client + "\x00" + jti))
	return clientAssertionJTIPrefix + hex.EncodeToString(sum[:])
}

func (s scopedAssertionJTIs) ClientAssertionJWTValid(ctx context.Context, jti string) error {
	return s.Storage.ClientAssertionJWTValid(ctx, assertionJTIKey(ctx, jti))
}

func (s scopedAssertionJTIs) SetClientAssertionJWT(ctx context.Context, jti string, exp time.Time) error {
	return s.Storage.SetClientAssertionJWT(ctx, assertionJTIKey(ctx, jti), exp)
}

// clientAuthentication is fosite's, with the client a client_assertion names put in
// ctx for scopedAssertionJTIs. It is read unverified, but fosite checks the jti only
// after it has verified the assertion's signature with that client's keys and that
// its sub is the client authenticated, so the key's client is the verified one.
//
// An assertion that expires more than maxAssertionLifetime from now is refused
// before it is verified (refusing needs no trust in it): fosite sets no bound, and
// its jti is kept until its exp, so one client could keep a row per request for
// years.
func clientAuthentication(f **fosite.Fosite) fosite.ClientAuthenticationStrategy {
	return func(ctx context.Context, r *http.Request, form url.Values) (fosite.Client, error) {
		if form.Get("client_assertion_type") == clientAssertionType {
			claims := unverifiedClaims(form.Get("client_assertion"))
			if claims.Expiry != nil && claims.Expiry.Time().After(time.Now().Add(maxAssertionLifetime)) {
				return nil, fosite.ErrInvalidClient.WithHintf("The client_assertion's exp (%s) is more than %s away: "+
					"make client assertions short-lived (minutes).", claims.Expiry.Time().UTC().Format(time.RFC3339), maxAssertionLifetime)
			}
			ctx = context.WithValue(ctx, assertionClientKey{}, claims.Subject)
		}
		return (*f).DefaultClientAuthenticationStrategy(ctx, r, form)
	}
}

// maxAssertionLifetime bounds how far ahead a client assertion may expire, as fosite
// bounds the JWT bearer grant's (24 hours after its iat).
const maxAssertionLifetime = 24 * time.Hour
