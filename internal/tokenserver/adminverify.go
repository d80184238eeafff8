package tokenserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/store"
)

// verifyGrantLifetime bounds the approval behind a verification code, and so every
// token issued under it: refresh tokens rotate, and a chain left by a killed
// verification Job must not go on for as long as someone keeps refreshing it.
const verifyGrantLifetime = time.Hour

const fieldClientID = "clientID"

// Parameters of the authorization request and of the redirect answering it.
const (
	paramCode  = "code"
	paramState = "state"
)

// verifyAuthorize serves POST /admin/verify/authorize (docs/admin-api.md): an
// authorization request of a temporary verification client, approved for the fixed
// subject adminapi.VerifySubject, answered with the code instead of a redirect.
//
// It exists because no grant yields a refresh token without a signed-in user, and
// an upgrade's verification must check refresh through the new color without a
// user's password. It goes through the same parsing and approval as a browser's
// request (redirect URI, PKCE, scopes, state, the first-party grant), so what the
// verification then exchanges and refreshes at the token endpoint is a code like
// any other. It serves only an administrator's client (no owner namespace) whose ID
// has the verification prefix, and never another subject: the caller, holding the
// admin token, could register such a client and get client_credentials tokens for
// it anyway.
func (s *Server) verifyAuthorize(w http.ResponseWriter, r *http.Request) {
	var in adminapi.VerifyAuthorizeRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		adminError(w, http.StatusBadRequest, unknownField(err), "invalid JSON body: "+err.Error())
		return
	}
	if code, field, msg := s.verifyClientAllowed(r, in.ClientID); field != "" {
		adminError(w, code, field, msg)
		return
	}
	if field, msg := validateVerifyRequest(&in); field != "" {
		adminError(w, http.StatusBadRequest, field, msg)
		return
	}
	p := s.cfg.Provider
	q := url.Values{"response_type": {paramCode}, "client_id": {in.ClientID}, "redirect_uri": {in.RedirectURI},
		"scope": {in.Scope}, paramState: {in.State}, "code_challenge": {in.CodeChallenge},
		"code_challenge_method": {in.CodeChallengeMethod}}
	synthetic, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "/oauth2/auth?"+q.Encode(), nil)
	if err != nil {
		adminError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	areq, err := p.ParseAuthorize(synthetic)
	if err != nil {
		s.verifyAuthorizeError(w, err, areq)
		return
	}
	g, err := s.cfg.Store.PutGrant(r.Context(), &store.ConsentGrant{ClientID: in.ClientID, Subject: adminapi.VerifySubject,
		Scopes: areq.Scopes, Source: store.SourceFirstParty, ExpiresAt: time.Now().Add(verifyGrantLifetime).UTC()})
	if errors.Is(err, store.ErrNotFirstParty) {
		adminError(w, http.StatusForbidden, fieldClientID, "the client no longer skips consent")
		return
	}
	if err != nil {
		s.storeError(w, err)
		return
	}
	rec := newBuffered()
	p.Approve(rec, synthetic, areq, adminapi.VerifySubject, nil, g, time.Now())
	code, status, field, msg := verifyRedirect(rec, in.RedirectURI, in.State)
	if code == "" {
		if status == http.StatusInternalServerError {
			s.cfg.Log.Error("admin API: verify authorize", "err", msg)
		}
		adminError(w, status, field, msg)
		return
	}
	s.cfg.Log.Info("verification code issued", "client_id", in.ClientID, "subject", adminapi.VerifySubject, "scopes", areq.Scopes)
	writeJSON(w, http.StatusOK, adminapi.VerifyAuthorization{Code: code, State: in.State})
}

// unknownField names the field of an "unknown field" decoding error, so that a
// caller who sends, say, a subject learns which field was refused.
func unknownField(err error) string {
	const prefix = `json: unknown field "`
	if s := err.Error(); strings.HasPrefix(s, prefix) {
		return strings.TrimSuffix(strings.TrimPrefix(s, prefix), `"`)
	}
	return ""
}

// verifyClientAllowed admits only a temporary verification client: its ID has the
// prefix, it has no owner namespace (an administrator registered it; no namespace
// can), and it skips consent, so the approval is stored as first-party like any
// approval nobody was asked for. The prefix is checked before the database is asked.
func (s *Server) verifyClientAllowed(r *http.Request, id string) (code int, field, msg string) {
	switch {
	case id == "":
		return http.StatusBadRequest, fieldClientID, "is required: the ID of the temporary verification client"
	case !strings.HasPrefix(id, adminapi.VerifyClientIDPrefix):
		return http.StatusForbidden, fieldClientID, fmt.Sprintf("only a verification client (ID starting with %q) may be used here",
			adminapi.VerifyClientIDPrefix)
	}
	c, err := s.cfg.Store.GetClientByID(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusBadRequest, fieldClientID, "no client with this ID is registered"
	case err != nil:
		code := storeErrStatus(err)
		if code == http.StatusInternalServerError {
			s.cfg.Log.Error("admin API: verify authorize", "err", err)
		}
		return code, fieldClientID, "the client could not be read"
	case c.OwnerNamespace != "":
		return http.StatusForbidden, fieldClientID, fmt.Sprintf("belongs to namespace %q: only an administrator's client "+
			"(no owner namespace) may be used here", c.OwnerNamespace)
	case !c.SkipConsent:
		return http.StatusForbidden, fieldClientID, "the client must skip consent (skipConsent): the approval is first-party"
	}
	return 0, "", ""
}

// validateVerifyRequest names the fields the server would otherwise fill in or let
// pass: the redirect URI is never chosen for the caller, and PKCE is required even
// where the server accepts codes without it.
func validateVerifyRequest(in *adminapi.VerifyAuthorizeRequest) (field, msg string) {
	switch {
	case in.RedirectURI == "":
		return "redirectURI", "is required: one of the client's redirect URIs, exactly"
	case in.State == "":
		return paramState, "is required (at least 8 characters)"
	case in.CodeChallengeMethod != "S256":
		return "codeChallengeMethod", "must be S256: the code is exchanged with a PKCE verifier"
	case in.CodeChallenge == "":
		return "codeChallenge", "is required (PKCE, RFC 7636)"
	}
	return "", ""
}

// verifyAuthorizeError answers a request fosite refused, naming the field at fault.
func (s *Server) verifyAuthorizeError(w http.ResponseWriter, err error, areq *oauth.AuthorizeRequest) {
	if errors.Is(err, store.ErrUnavailable) {
		s.storeError(w, err)
		return
	}
	_, name := oauth.ErrorStatus(err)
	field := oauthErrorField(name, oauth.ErrorDescription(err))
	if !areq.CanRedirect() {
		field = "redirectURI" // the client exists: its redirect URI is what did not match
	}
	adminError(w, http.StatusBadRequest, field, oauth.ErrorDescription(err))
}

// oauthErrorField maps an RFC 6749 error of an authorization request to the
// request's field; fosite says which PKCE parameter is wrong only in its
// description.
func oauthErrorField(code, description string) string {
	switch {
	case code == fosite.ErrInvalidRequest.ErrorField && strings.Contains(description, "code_challenge_method"):
		return "codeChallengeMethod"
	case code == fosite.ErrInvalidRequest.ErrorField && (strings.Contains(description, "code_challenge") ||
		strings.Contains(description, "PKCE")):
		return "codeChallenge"
	}
	switch code {
	case fosite.ErrInvalidScope.ErrorField:
		return "scope"
	case fosite.ErrInvalidState.ErrorField:
		return paramState
	case fosite.ErrUnsupportedResponseType.ErrorField, fosite.ErrUnauthorizedClient.ErrorField:
		return fieldClientID
	}
	return ""
}

// verifyRedirect reads the approval's redirect: the code, or the error the client
// would have been sent, with the admin API's status and the field at fault.
func verifyRedirect(rec *buffered, redirectURI, state string) (code string, status int, field, msg string) {
	if rec.code < 300 || rec.code > 399 {
		return "", http.StatusInternalServerError, "", fmt.Sprintf("the approval answered %d, not a redirect", rec.code)
	}
	loc, err := url.Parse(rec.header.Get("Location"))
	if err != nil {
		return "", http.StatusInternalServerError, "", "the approval's redirect is not a URL"
	}
	q := loc.Query()
	switch e := q.Get("error"); e {
	case "":
	case fosite.ErrServerError.ErrorField, fosite.ErrTemporarilyUnavailable.ErrorField:
		return "", http.StatusServiceUnavailable, "", e + ": " + q.Get("error_description")
	default:
		return "", http.StatusBadRequest, oauthErrorField(e, q.Get("error_description")), e + ": " + q.Get("error_description")
	}
	base := *loc
	base.RawQuery, base.Fragment = "", ""
	if want, _, _ := strings.Cut(redirectURI, "?"); base.String() != want || q.Get(paramState) != state || q.Get(paramCode) == "" {
		return "", http.StatusInternalServerError, "", "the approval's redirect has no code, another state or another address"
	}
	return q.Get(paramCode), http.StatusOK, "", ""
}
