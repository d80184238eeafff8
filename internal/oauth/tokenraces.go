package oauth

import (
	"context"
	"errors"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/pkce"
)

// codeReuse finishes what fosite's authorization-code handler leaves undone when two
// exchanges of one code race. fosite revokes a code's tokens and answers invalid_grant
// when its read finds the code used, but both racing exchanges read it as unused;
// the store's InvalidateAuthorizeCodeSession then fails the later one with
// ErrInvalidatedAuthorizeCode, which fosite turns into a server error after rolling
// its transaction back. RFC 6749 section 4.1.2: the second use must fail and what the
// code issued should be revoked, so this answers invalid_grant and revokes here,
// after fosite's rollback, on the request's context (no transaction of fosite's to
// undo it). The first exchange has committed by then: the store's UPDATE waited for
// its row lock.
type codeReuse struct {
	*oauth2.AuthorizeExplicitGrantHandler
	revoke oauth2.TokenRevocationStorage
}

func (h codeReuse) PopulateTokenEndpointResponse(ctx context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	err := h.AuthorizeExplicitGrantHandler.PopulateTokenEndpointResponse(ctx, ar, resp)
	if err == nil || !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) {
		return err
	}
	// HandleTokenEndpointRequest set the code's request ID on ar.
	hint := "The authorization code has already been used."
	var debug string
	if revErr := h.revoke.RevokeAccessToken(ctx, ar.GetID()); revErr != nil {
		hint += " Additionally, an error occurred during processing the access token revocation."
		debug += "Revocation of access_token: " + revErr.Error() + ". "
	}
	if revErr := h.revoke.RevokeRefreshToken(ctx, ar.GetID()); revErr != nil {
		hint += " Additionally, an error occurred during processing the refresh token revocation."
		debug += "Revocation of refresh_token: " + revErr.Error() + "."
	}
	return fosite.ErrInvalidGrant.WithHint(hint).WithDebug(debug)
}

// refreshRevoked answers invalid_grant (RFC 6749 section 5.2: the refresh token is
// revoked) for a refresh whose refresh token was revoked after fosite read it: the
// store then fails the rotation with ErrNotFound and nothing is stored, but fosite
// answers that with invalid_request and "please retry", which a retry could only
// turn into invalid_grant.
type refreshRevoked struct {
	*oauth2.RefreshTokenGrantHandler
}

func (h refreshRevoked) PopulateTokenEndpointResponse(ctx context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	err := h.RefreshTokenGrantHandler.PopulateTokenEndpointResponse(ctx, ar, resp)
	if err != nil && (errors.Is(err, fosite.ErrNotFound) || errors.Is(err, fosite.ErrInactiveToken)) {
		return fosite.ErrInvalidGrant.WithHint("The refresh token was revoked.").WithWrap(err).WithDebug(err.Error())
	}
	return err
}

// pkceCodeReuse closes the other order of the race codeReuse handles. fosite's PKCE
// check reads and deletes the code's PKCE record while the exchange is validated,
// before any transaction: of two racing exchanges, the second may find the record
// gone and fail there with invalid_grant, before the code is invalidated, and then
// nothing revokes the first one's tokens. So a code whose PKCE record is gone is
// invalidated here: if that finds it already used, what it issued is revoked (the
// store's UPDATE waited for the first exchange's commit); if it was not, the code is
// spent now and the first exchange fails at its own invalidation. An exchange without
// the code's PKCE record never succeeds anyway.
type pkceCodeReuse struct {
	*pkce.Handler
	codes  oauth2.AuthorizeCodeStorage
	revoke oauth2.TokenRevocationStorage
}

func (h pkceCodeReuse) HandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) error {
	err := h.Handler.HandleTokenEndpointRequest(ctx, ar)
	if err == nil || !errors.Is(err, fosite.ErrNotFound) || !h.CanHandleTokenEndpointRequest(ctx, ar) || ar.GetID() == "" {
		return err
	}
	sig := h.AuthorizeCodeStrategy.AuthorizeCodeSignature(ctx, ar.GetRequestForm().Get("code"))
	if invErr := h.codes.InvalidateAuthorizeCodeSession(ctx, sig); errors.Is(invErr, fosite.ErrInvalidatedAuthorizeCode) {
		// HandleTokenEndpointRequest of the code handler, which runs first, set the
		// code's request ID on ar.
		_ = h.revoke.RevokeAccessToken(ctx, ar.GetID())
		_ = h.revoke.RevokeRefreshToken(ctx, ar.GetID())
	}
	return err
}
