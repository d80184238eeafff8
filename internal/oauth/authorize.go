package oauth

import (
	"net/http"
	"time"

	"github.com/ory/fosite"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// AuthorizeRequest is a validated authorization request: the client exists, the
// redirect URI matches one registered exactly, the scopes are the client's, and PKCE
// parameters are present when the client is public.
type AuthorizeRequest struct {
	ClientID    string
	RedirectURI string
	State       string
	Scopes      []string
	ar          fosite.AuthorizeRequester
}

// ParseAuthorize validates an authorization request (query or form). On error the
// caller must answer with AuthorizeError, which redirects back to the client when the
// redirect URI is trustworthy and shows an error otherwise.
func (p *Provider) ParseAuthorize(r *http.Request) (*AuthorizeRequest, error) {
	ar, err := p.f.NewAuthorizeRequest(r.Context(), r)
	out := &AuthorizeRequest{ar: ar}
	if ar != nil {
		out.State = ar.GetState()
		if ar.GetClient() != nil {
			out.ClientID = ar.GetClient().GetID()
		}
		if u := ar.GetRedirectURI(); u != nil {
			out.RedirectURI = u.String()
		}
		out.Scopes = ar.GetRequestedScopes()
	}
	// fosite enforces PKCE for public clients only when it issues the code; refuse
	// before the user signs in and consents for nothing.
	if err == nil && ar.GetClient().IsPublic() && ar.GetRequestForm().Get("code_challenge_method") != "S256" {
		err = fosite.ErrInvalidRequest.WithHint("Public clients must use PKCE with code_challenge_method S256.")
	}
	return out, err
}

// AuthorizeError answers an authorization request with err (RFC 6749 4.1.2.1).
func (p *Provider) AuthorizeError(w http.ResponseWriter, r *http.Request, areq *AuthorizeRequest, err error) {
	var ar fosite.AuthorizeRequester = fosite.NewAuthorizeRequest()
	if areq != nil && areq.ar != nil {
		ar = areq.ar
	}
	p.f.WriteAuthorizeError(r.Context(), w, ar, err)
}

// Deny answers access_denied: the user said no.
func (p *Provider) Deny(w http.ResponseWriter, r *http.Request, areq *AuthorizeRequest) {
	p.AuthorizeError(w, r, areq, fosite.ErrAccessDenied.WithHint("The user denied the request."))
}

// Approve issues the authorization code for subject with every requested scope, under
// consent grant, and redirects back to the client. Nothing issued under the grant
// outlives it: the code, and later the tokens, expire by the grant's expiry.
func (p *Provider) Approve(w http.ResponseWriter, r *http.Request, areq *AuthorizeRequest, subject string,
	grant *store.ConsentGrant, authTime time.Time) {
	ctx := r.Context()
	for _, s := range areq.ar.GetRequestedScopes() {
		areq.ar.GrantScope(s)
	}
	for _, a := range areq.ar.GetRequestedAudience() {
		areq.ar.GrantAudience(a)
	}
	now := time.Now().UTC()
	sess := newSubjectSession(p.cfg.Issuer, subject, grant.ID, p.cfg.Keys.Current.ID, now,
		sessionKind{idToken: true, jwtAccess: p.cfg.AccessTokenFormat == FormatJWT})
	sess.Claims.AuthTime = authTime.UTC()
	sess.GrantExpiresAt = grant.ExpiresAt
	resp, err := p.f.NewAuthorizeResponse(ctx, areq.ar, sess)
	if err != nil {
		p.f.WriteAuthorizeError(ctx, w, areq.ar, err)
		return
	}
	p.f.WriteAuthorizeResponse(ctx, w, areq.ar, resp)
}
