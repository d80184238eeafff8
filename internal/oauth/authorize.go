package oauth

import (
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/ory/fosite"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// AuthorizeRequest is a validated authorization request: the client exists, the
// redirect URI matches one registered exactly, the scopes are the client's, and PKCE
// parameters are present (from every client unless OptionalPKCE, from public clients
// always).
type AuthorizeRequest struct {
	ClientID    string
	RedirectURI string
	State       string
	Scopes      []string
	// Prompt is the OpenID Connect prompt parameter, space-separated, and MaxAge its
	// max_age ("" when absent): the request's own, pushed (PAR) or not.
	Prompt, MaxAge string
	// RequestedAt is when the request counts as made, for prompt=login and max_age
	// (see fosite's ValidatePrompt); zero means now. After a sign-in forced by
	// either, it is when the login page was shown, so that the sign-in counts.
	RequestedAt time.Time
	ar          fosite.AuthorizeRequester
	// continuation is the request_uri that carries a pushed request across the pages.
	continuation string
	// inexact: the redirect URI matched a registered one only by fosite's loopback
	// rule, and the client is not public (see registeredExactly).
	inexact bool
}

// ErrPromptNoneAlone refuses prompt=none with other values (OpenID Connect Core
// 3.1.2.1).
var ErrPromptNoneAlone = fosite.ErrInvalidRequest.WithHint("prompt=none cannot be combined with other values.")

// ParseAuthorize validates an authorization request (query or form). On error the
// caller must answer with AuthorizeError when CanRedirect says the client may be told,
// and with its own error page otherwise.
func (p *Provider) ParseAuthorize(r *http.Request) (*AuthorizeRequest, error) {
	pushed := isPushed(r)
	if err := requestObjectError(r.Form, pushed); err != nil {
		return &AuthorizeRequest{}, err
	}
	if pushed {
		frontChannelOfPushed(r)
	}
	ar, err := p.f.NewAuthorizeRequest(r.Context(), r)
	out := &AuthorizeRequest{ar: ar}
	if ar != nil {
		out.State = ar.GetState()
		out.Prompt = ar.GetRequestForm().Get("prompt")
		out.MaxAge = ar.GetRequestForm().Get("max_age")
		if ar.GetClient() != nil {
			out.ClientID = ar.GetClient().GetID()
		}
		if u := ar.GetRedirectURI(); u != nil {
			out.RedirectURI = u.String()
		}
		out.Scopes = ar.GetRequestedScopes()
	}
	if err == nil && !registeredExactly(ar) {
		out.inexact = true
		err = fosite.ErrInvalidRequest.WithHint("The redirect_uri is not one registered for the client: " +
			"another port of a loopback address is taken from public (native) clients only (RFC 8252 section 7.3).")
	}
	// fosite enforces PKCE only when it issues the code; refuse before the user signs
	// in and consents for nothing.
	if err == nil {
		err = p.pkceError(ar)
	}
	// Refused before the user consents to a request whose code would be refused.
	if err == nil {
		err = p.foreignAudience(r.Context(), ar.GetClient().GetID(), ar.GetRequestedAudience())
	}
	if err == nil && pushed {
		err = p.continuePAR(r, out)
	}
	return out, err
}

// requestObjectError refuses OpenID Connect request objects (Core section 6), by
// value or by reference: this server does not take them (discovery says so), and
// fosite took an unsigned one ("alg": "none") from any client with keys, its claims
// laid over parameters already checked. The only request_uri taken is a pushed
// request's (PAR). Refused before fosite reads the request, so the user sees an
// error page: nothing in such a request can be trusted to say where to send one.
func requestObjectError(form url.Values, pushed bool) error {
	if form.Get("request") != "" {
		return fosite.ErrRequestNotSupported.WithHint(
			"This server does not take request objects; send the parameters themselves, or push them (PAR).")
	}
	if !pushed && form.Get("request_uri") != "" {
		return fosite.ErrRequestURINotSupported.WithHint(
			"The only request_uri this server takes is one its pushed authorization request endpoint issued.")
	}
	return nil
}

// CanRedirect says whether an error may go back to the client: only to a redirect
// URI registered for a known client. Otherwise the user must see an error page, and
// never be sent to an address the request made up.
func (a *AuthorizeRequest) CanRedirect() bool {
	return a != nil && !a.inexact && a.ar != nil && a.ar.GetClient() != nil && a.ar.IsRedirectURIValid()
}

// registeredExactly says whether ar's redirect URI is one registered for its
// client, character for character, unless the client is public. fosite applies
// RFC 8252's rule for native apps to every client: a loopback redirect URI matches
// a registered one on any port (and either scheme). A native app picks its port
// when it starts, so a public client keeps the rule; a confidential client is a
// server with a fixed address, and on a machine users share any of them could
// listen on another port and take its codes (or errors).
func registeredExactly(ar fosite.AuthorizeRequester) bool {
	c := ar.GetClient()
	if c == nil || c.IsPublic() {
		return true
	}
	raw := ar.GetRequestForm().Get("redirect_uri")
	return raw == "" || slices.Contains(c.GetRedirectURIs(), raw)
}

// AuthorizeError answers an authorization request with err (RFC 6749 4.1.2.1).
func (p *Provider) AuthorizeError(w http.ResponseWriter, r *http.Request, areq *AuthorizeRequest, err error) {
	p.endPAR(r.Context(), areq)
	var ar fosite.AuthorizeRequester = fosite.NewAuthorizeRequest()
	if areq != nil && areq.ar != nil {
		ar = areq.ar
	}
	p.f.WriteAuthorizeError(r.Context(), issWriter{w, p.cfg.Issuer}, ar, err)
}

// LoginRequired answers prompt=none without a signed-in user (OpenID Connect Core
// 3.1.2.6): the app learns it must send the user to sign in.
func (p *Provider) LoginRequired(w http.ResponseWriter, r *http.Request, areq *AuthorizeRequest) {
	p.AuthorizeError(w, r, areq, fosite.ErrLoginRequired.WithHint("No user is signed in and prompt=none forbids asking."))
}

// ConsentRequired answers prompt=none when the user would have to consent first.
func (p *Provider) ConsentRequired(w http.ResponseWriter, r *http.Request, areq *AuthorizeRequest) {
	p.AuthorizeError(w, r, areq, fosite.ErrConsentRequired.WithHint("The user has not consented and prompt=none forbids asking."))
}

// Deny answers access_denied: the user said no.
func (p *Provider) Deny(w http.ResponseWriter, r *http.Request, areq *AuthorizeRequest) {
	p.AuthorizeError(w, r, areq, fosite.ErrAccessDenied.WithHint("The user denied the request."))
}

// Approve issues the authorization code for subject with every requested scope, under
// consent grant, and redirects back to the client. id's attributes go into the ID
// token and userinfo as far as the scopes allow; id may be nil. Nothing issued under the grant
// outlives it: the code, and later the tokens, expire by the grant's expiry.
func (p *Provider) Approve(w http.ResponseWriter, r *http.Request, areq *AuthorizeRequest, subject string,
	id *Identity, grant *store.ConsentGrant, authTime time.Time) {
	ctx := r.Context()
	p.endPAR(ctx, areq)
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
	sess.Identity = id.keepOnly(areq.ar.GetGrantedScopes())
	if sess.Identity != nil && sess.Identity.Username != "" {
		sess.Username = sess.Identity.Username // userinfo's preferred_username
	}
	sess.setIDTokenClaims(areq.ar.GetGrantedScopes())
	if !areq.RequestedAt.IsZero() {
		sess.Claims.RequestedAt = areq.RequestedAt.UTC()
	}
	sess.GrantExpiresAt = grant.ExpiresAt
	resp, err := p.f.NewAuthorizeResponse(ctx, areq.ar, sess)
	if err != nil {
		p.AuthorizeError(w, r, areq, err)
		return
	}
	// RFC 9207: the client can tell which server answered, against mix-up attacks.
	resp.AddParameter("iss", p.cfg.Issuer)
	p.f.WriteAuthorizeResponse(ctx, w, areq.ar, resp)
}

// issWriter adds iss (RFC 9207) to the error redirects fosite writes, which offer no
// hook for extra parameters.
type issWriter struct {
	http.ResponseWriter
	iss string
}

func (w issWriter) WriteHeader(code int) {
	if code >= 300 && code < 400 {
		if u, err := url.Parse(w.Header().Get("Location")); err == nil && u.Scheme != "" {
			if u.Fragment != "" {
				if f, err := url.ParseQuery(u.Fragment); err == nil {
					f.Set("iss", w.iss)
					u.Fragment = f.Encode()
				}
			} else {
				q := u.Query()
				q.Set("iss", w.iss)
				u.RawQuery = q.Encode()
			}
			w.Header().Set("Location", u.String())
		}
	}
	w.ResponseWriter.WriteHeader(code)
}
