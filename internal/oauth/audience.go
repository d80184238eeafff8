package oauth

import (
	"context"
	"errors"
	"regexp"

	"github.com/ory/fosite"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// clientIDLike matches what an OAuthClient's client ID may be (the CRD's rule on
// spec.clientID, which derived IDs keep too): an audience that does not match, a URL
// above all, names no client and costs no lookup.
var clientIDLike = regexp.MustCompile(`^[A-Za-z0-9._~-]+$`)

// MayNameClient says whether the audience aud could be a client's ID.
func MayNameClient(aud string) bool { return clientIDLike.MatchString(aud) }

// foreignAudience refuses an audience that is the client ID of an OAuthClient another
// namespace owns. A client's ID is the audience of the ID tokens it is given, and an
// app that signs people in with them (the kube-apiserver's OIDC authenticator, one
// built on go-oidc) checks the issuer, the signature and that aud names it, not the
// at+jwt type of a JWT access token: a tenant registering spec.audience [kubernetes]
// would otherwise get, for each user who consents to its app, an access token the
// API server takes as that user's ID token. Checked where tokens are issued rather
// than only when a client is registered, so that a client registered after the
// audience naming it is covered too; an audience of the tenant's own namespace, and
// the client's own ID, stay allowed.
func (p *Provider) foreignAudience(ctx context.Context, clientID string, audiences []string) error {
	owner := ""
	for _, aud := range audiences {
		if aud == clientID || !clientIDLike.MatchString(aud) {
			continue
		}
		target, err := p.store.GetClientByID(ctx, aud)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return fosite.ErrServerError.WithWrap(err)
		}
		if owner == "" {
			c, err := p.store.GetClientByID(ctx, clientID)
			if err != nil {
				return fosite.ErrServerError.WithWrap(err)
			}
			owner = c.OwnerNamespace
		}
		if target.OwnerNamespace != owner {
			return fosite.ErrInvalidRequest.WithHintf("The audience %q is the client ID of an OAuthClient in another namespace: "+
				"a token for it could pass for that app's ID token. Name a URL of the API the token is for instead.", aud)
		}
	}
	return nil
}
