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

// ClientsByID reads clients by ID, as the store does.
type ClientsByID interface {
	GetClientByID(ctx context.Context, id string) (*store.Client, error)
}

// ForeignAudience is the index in audiences of the first one that is the client ID
// of an OAuthClient owned by another namespace than owner, -1 if none is. A client's
// ID is the audience of the ID tokens it is given, and an app that signs people in
// with them (the kube-apiserver's OIDC authenticator, one built on go-oidc) checks
// the issuer, the signature and that aud names it, not the at+jwt type of a JWT
// access token: a tenant registering spec.audience [kubernetes] would otherwise get,
// for each user who consents to its app, an access token the API server takes as
// that user's ID token. clientID itself, and audiences shaped as no client ID can
// be (a URL), are never looked up. The admin API refuses such an audience when a
// client is registered; the authorization and token endpoints when tokens are
// issued, so that a client registered after the audience naming it is covered too.
func ForeignAudience(ctx context.Context, clients ClientsByID, clientID, owner string, audiences []string) (int, error) {
	for i, aud := range audiences {
		if aud == clientID || !clientIDLike.MatchString(aud) {
			continue
		}
		target, err := clients.GetClientByID(ctx, aud)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return -1, err
		}
		if target.OwnerNamespace != owner {
			return i, nil
		}
	}
	return -1, nil
}

// foreignAudience refuses, for a request of clientID, an audience ForeignAudience
// finds.
func (p *Provider) foreignAudience(ctx context.Context, clientID string, audiences []string) error {
	if len(audiences) == 0 {
		return nil
	}
	c, err := p.store.GetClientByID(ctx, clientID)
	if err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	i, err := ForeignAudience(ctx, p.store, clientID, c.OwnerNamespace, audiences)
	if err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	if i >= 0 {
		return fosite.ErrInvalidRequest.WithHintf("The audience %q is the client ID of an OAuthClient in another namespace: "+
			"a token for it could pass for that app's ID token. Name a URL of the API the token is for instead.", audiences[i])
	}
	return nil
}
