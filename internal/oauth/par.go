package oauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ory/fosite"
)

// ClientAssertionAlgorithms are the algorithms fosite accepts on a private_key_jwt
// client assertion (token_endpoint_auth_signing_alg_values_supported); which one a
// client must use is its key's.
var ClientAssertionAlgorithms = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}

// parPrefix is RFC 9126's request_uri namespace.
const parPrefix = "urn:ietf:params:oauth:request_uri:"

// continuationLifespan is how long the sign-in and consent pages keep a pushed request
// alive between steps: a person reads and types, and 5 minutes (RFC 9126's advice for
// the client's own request_uri) can be too short for them.
const continuationLifespan = 15 * time.Minute

// RequirePAR says whether authorization requests must be pushed first (RFC 9126
// section 5, require_pushed_authorization_requests).
func (p *Provider) RequirePAR() bool { return p.cfg.RequirePAR }

// PushedAuthorize serves the pushed authorization request endpoint (RFC 9126): the
// client authenticates as at the token endpoint and gets a request_uri for one
// authorization request.
func (p *Provider) PushedAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := r.ParseForm(); err == nil && r.PostForm.Get("request") != "" {
		p.f.WritePushedAuthorizeError(ctx, w, nil, requestObjectError(r.PostForm, false))
		return
	}
	ar, err := p.f.NewPushedAuthorizeRequest(ctx, r)
	if err == nil {
		// Refused here rather than after the user signed in for nothing.
		err = p.pkceError(ar)
	}
	if err != nil {
		p.f.WritePushedAuthorizeError(ctx, w, ar, err)
		return
	}
	resp, err := p.f.NewPushedAuthorizeResponse(ctx, ar, NewSession())
	if err != nil {
		p.f.WritePushedAuthorizeError(ctx, w, ar, err)
		return
	}
	p.f.WritePushedAuthorizeResponse(ctx, w, ar, resp)
}

// pkceError is the refusal of a request without the PKCE this server requires.
func (p *Provider) pkceError(ar fosite.AuthorizeRequester) error {
	if (p.cfg.OptionalPKCE && !ar.GetClient().IsPublic()) || ar.GetRequestForm().Get("code_challenge_method") == "S256" {
		return nil
	}
	hint := "This server requires PKCE with code_challenge_method S256 from every client (RFC 9700)."
	if ar.GetClient().IsPublic() {
		hint = "Public clients must use PKCE with code_challenge_method S256."
	}
	return fosite.ErrInvalidRequest.WithHint(hint)
}

// continuePAR keeps a pushed request alive across the sign-in and consent pages.
// fosite deletes the client's request_uri on first use, and those pages send the
// request back again; sending the pushed parameters through the browser would undo
// what PAR is for (nothing the browser can change, require_pushed_authorization_requests
// refusing it). So the request is pushed again under a new request_uri that only the
// pages carry, and r's form becomes client_id and that request_uri, which is what the
// pages send back. Approve and AuthorizeError delete it.
func (p *Provider) continuePAR(r *http.Request, out *AuthorizeRequest) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	uri := parPrefix + base64.RawURLEncoding.EncodeToString(b)
	sess := out.ar.GetSession()
	if sess == nil {
		sess = NewSession()
		out.ar.SetSession(sess)
	}
	sess.SetExpiresAt(fosite.PushedAuthorizeRequestContext, time.Now().UTC().Add(continuationLifespan))
	if err := p.store.CreatePARSession(r.Context(), uri, out.ar); err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	form := url.Values{"client_id": {out.ClientID}, "request_uri": {uri}}
	// What the pages add to the request goes on with it: the consent form's fields,
	// and the login page's sign-in marker (without it a pushed prompt=login would
	// ask for a sign-in again and again).
	for _, k := range []string{"csrf", "decision", SignedInAfterParam, SignedInForParam} {
		if v, ok := r.Form[k]; ok {
			form[k] = v
		}
	}
	r.Form, out.continuation = form, uri
	return nil
}

// endPAR deletes the request_uri the pages carried, once the request is answered.
func (p *Provider) endPAR(ctx context.Context, areq *AuthorizeRequest) {
	if areq != nil && areq.continuation != "" {
		_ = p.store.DeletePARSession(ctx, areq.continuation) // expires soon anyway
	}
}

// SignedInAfterParam is the parameter the login page adds to the authorization
// request it returns to: when it was shown, signed (prompt=login and max_age).
const SignedInAfterParam = "kubeoauth_signed_in_after"

// SignedInForParam is the same marker bound to its authorization request, which
// this version reads; SignedInAfterParam, unbound, is still added for a version
// before it that serves beside this one during an upgrade.
const SignedInForParam = "kubeoauth_signed_in_for"

// isPushed says whether r continues a pushed request.
func isPushed(r *http.Request) bool { return strings.HasPrefix(r.Form.Get("request_uri"), parPrefix) }

// frontChannelOfPushed keeps, of a request that names a pushed request_uri, only
// client_id, request_uri and what this server's own pages add on the way (the
// consent form's fields, the sign-in marker; see continuePAR). fosite lays the
// pushed parameters over the ones in the URL but keeps those the client did not
// push, so that whoever handles the link (the user's browser, anything on its way)
// could add a nonce, a prompt, a max_age or acr_values the client never asked for.
// The parameters of a pushed request are the pushed ones only (RFC 9126 section 4;
// FAPI 2.0 ignores the others, as here). r.Form must be parsed.
func frontChannelOfPushed(r *http.Request) {
	kept := url.Values{}
	for _, k := range []string{"client_id", "request_uri", "csrf", "decision", SignedInAfterParam, SignedInForParam} {
		if v, ok := r.Form[k]; ok {
			kept[k] = v
		}
	}
	r.Form = kept
}
