package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/storage"
	enigma "github.com/ory/fosite/token/hmac"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// The device authorization grant (RFC 8628) is ours: fosite v0.49.0 has no handler
// for it. The token endpoint's part is a fosite.TokenEndpointHandler composed with
// fosite's own, so client authentication, the token strategies, the storage and the
// error responses are fosite's; what is ours is the device authorization endpoint,
// the user code and the polling state. Later fosite releases ship an RFC 8628
// handler: this file is what to replace with it.

// GrantDeviceCode is the device authorization grant's grant_type.
const GrantDeviceCode = "urn:ietf:params:oauth:grant-type:device_code"

// GrantJWTBearer is the JWT bearer grant's grant_type (RFC 7523).
const GrantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer" // #nosec G101 -- a grant type, not a credential

// DevicePath is the user-code page: the verification_uri.
const DevicePath = "/device"

// Device flow defaults: RFC 8628 suggests 5 seconds between polls; ten minutes is
// long enough to find a browser and sign in.
const (
	DefaultDeviceInterval     = 5 * time.Second
	DefaultDeviceCodeLifespan = 10 * time.Minute
)

// DeviceStorage keeps device authorizations (internal/store/postgres implements it).
type DeviceStorage interface {
	CreateDeviceCodeSession(ctx context.Context, deviceSignature, userSignature string, interval int, exp time.Time, r fosite.Requester) error
	GetDeviceCodeSessionByUserCode(ctx context.Context, userSignature string) (fosite.Requester, error)
	DecideDeviceCode(ctx context.Context, userSignature string, r fosite.Requester) error
	PollDeviceCode(ctx context.Context, deviceSignature, clientID string, session fosite.Session,
		slack time.Duration) (fosite.Requester, error)
	InvalidateDeviceCodeSession(ctx context.Context, deviceSignature string) error
}

// RFC 8628 section 3.5's errors, which fosite v0.49.0 does not define.
var (
	errAuthorizationPending = &fosite.RFC6749Error{ErrorField: "authorization_pending", CodeField: http.StatusBadRequest,
		DescriptionField: "The user has not yet approved or denied the request; poll again after the interval."}
	errSlowDown = &fosite.RFC6749Error{ErrorField: "slow_down", CodeField: http.StatusBadRequest,
		DescriptionField: "The device polled faster than its interval; the interval is now 5 seconds longer."}
	errExpiredToken = &fosite.RFC6749Error{ErrorField: "expired_token", CodeField: http.StatusBadRequest,
		DescriptionField: "The device code has expired; start a new device authorization."}
	// errAccessDenied is fosite's access_denied with the token endpoint's status:
	// fosite's is 403, for the authorization endpoint's redirect, while RFC 8628
	// answers it in RFC 6749 section 5.2's format, 400 for every error but
	// invalid_client.
	errAccessDenied = &fosite.RFC6749Error{ErrorField: "access_denied", CodeField: http.StatusBadRequest,
		DescriptionField: "The user denied the request."}
)

// userCodeAlphabet is RFC 8628 section 6.1's: consonants only, so no word can be
// spelled and no letter taken for a digit. Eight of them are 34 bits; entering one is
// throttled per user and per address, so guessing a pending code is out of reach.
const (
	userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"
	userCodeLength   = 8
)

// newUserCode draws a user code, shown as XXXX-XXXX.
func newUserCode() (string, error) {
	out := make([]byte, 0, userCodeLength)
	buf := make([]byte, 16)
	for len(out) < userCodeLength {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			// 240 is the largest multiple of 20 below 256: no letter is likelier.
			if b < 240 && len(out) < userCodeLength {
				out = append(out, userCodeAlphabet[int(b)%len(userCodeAlphabet)])
			}
		}
	}
	return string(out[:4]) + "-" + string(out[4:]), nil
}

// NormalizeUserCode is the user code a person typed, as stored: upper case, without
// dashes or spaces. "" when it cannot be one.
func NormalizeUserCode(typed string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(typed) {
		switch {
		case r == '-' || r == ' ':
		case strings.ContainsRune(userCodeAlphabet, r):
			b.WriteRune(r)
		default:
			return ""
		}
	}
	if b.Len() != userCodeLength {
		return ""
	}
	return b.String()
}

// userCodeSignature is what the store keys a user code by: its HMAC, so that a
// reader of the database cannot approve a pending device with what it finds there.
func (p *Provider) userCodeSignature(normalized string) string {
	m := hmac.New(sha256.New, p.cfg.HMACSecret)
	m.Write([]byte("device user code\x00" + normalized))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// deviceAuthResponse is RFC 8628 section 3.2's answer.
type deviceAuthResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int    `json:"expires_in"`
	Interval                int    `json:"interval"`
}

// DeviceAuthorize serves the device authorization endpoint (RFC 8628 section 3.1):
// the client authenticates as at the token endpoint (a public client names itself),
// and gets a device code to poll with and a user code for the person to enter at
// verification_uri. The form must be parsed.
func (p *Provider) DeviceAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	fail := func(err error) { p.f.WriteAccessError(ctx, w, fosite.NewAccessRequest(NewSession()), err) }
	client, err := p.f.(*fosite.Fosite).AuthenticateClient(ctx, r, r.PostForm)
	if err != nil {
		fail(err)
		return
	}
	if !client.GetGrantTypes().Has(GrantDeviceCode) {
		fail(fosite.ErrUnauthorizedClient.WithHintf("The client is not allowed to use grant type %q.", GrantDeviceCode))
		return
	}
	req := fosite.NewRequest()
	req.Client, req.RequestedAt, req.Form = client, time.Now().UTC().Round(time.Second), credentialFreeForm(r.PostForm)
	req.ID = newRequestID()
	for _, s := range fosite.RemoveEmpty(strings.Split(r.PostForm.Get("scope"), " ")) {
		if !scopeStrategy(client.GetScopes(), s) {
			fail(fosite.ErrInvalidScope.WithHintf("The client is not allowed to request scope %q.", s))
			return
		}
		req.AppendRequestedScope(s)
	}
	aud := fosite.GetAudiences(r.PostForm)
	if err := fosite.DefaultAudienceMatchingStrategy(client.GetAudience(), aud); err != nil {
		fail(err)
		return
	}
	req.SetRequestedAudience(aud)
	code, sig, err := p.enigma.Generate(ctx)
	if err != nil {
		fail(fosite.ErrServerError.WithWrap(err))
		return
	}
	exp := req.RequestedAt.Add(p.cfg.DeviceCodeLifespan)
	var userCode string
	for range 5 {
		if userCode, err = newUserCode(); err != nil {
			break
		}
		err = p.store.CreateDeviceCodeSession(ctx, sig, p.userCodeSignature(NormalizeUserCode(userCode)),
			int(p.cfg.DeviceInterval/time.Second), exp, req)
		if !errors.Is(err, store.ErrUserCodeTaken) {
			break
		}
	}
	if errors.Is(err, store.ErrClientGone) {
		err = fosite.ErrInvalidClient.WithHint("The client no longer exists.")
	}
	if err != nil {
		fail(fosite.ErrServerError.WithWrap(err))
		return
	}
	verify := p.cfg.Issuer + DevicePath
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(deviceAuthResponse{DeviceCode: code, UserCode: userCode, VerificationURI: verify,
		VerificationURIComplete: verify + "?" + url.Values{"user_code": {userCode}}.Encode(),
		ExpiresIn:               int(p.cfg.DeviceCodeLifespan / time.Second), Interval: int(p.cfg.DeviceInterval / time.Second)})
}

func credentialFreeForm(form url.Values) url.Values {
	f := url.Values{}
	for k, v := range form {
		if k != "client_secret" && k != "client_assertion" && k != "client_assertion_type" {
			f[k] = v
		}
	}
	return f
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DeviceRequest is a pending device authorization, as the user-code page shows it.
type DeviceRequest struct {
	ClientID string
	Scopes   []string
	ar       fosite.Requester
	userSig  string
}

// LookupDevice finds the pending device authorization for a user code as a person
// typed it; store.ErrNotFound when there is none (unknown, mistyped, decided, expired).
func (p *Provider) LookupDevice(ctx context.Context, typed string) (*DeviceRequest, error) {
	n := NormalizeUserCode(typed)
	if n == "" {
		return nil, store.ErrNotFound
	}
	sig := p.userCodeSignature(n)
	ar, err := p.store.GetDeviceCodeSessionByUserCode(ctx, sig)
	if errors.Is(err, fosite.ErrNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &DeviceRequest{ClientID: ar.GetClient().GetID(), Scopes: ar.GetRequestedScopes(), ar: ar, userSig: sig}, nil
}

// ApproveDevice approves a device authorization for subject with every requested
// scope, under consent grant; the device's next poll gets the tokens, with an ID token
// and a refresh token as in the code flow when openid and offline_access are granted.
// store.ErrNotFound: it was decided meanwhile or expired.
func (p *Provider) ApproveDevice(ctx context.Context, dr *DeviceRequest, subject string, id *Identity,
	grant *store.ConsentGrant, authTime time.Time) error {
	for _, s := range dr.ar.GetRequestedScopes() {
		dr.ar.GrantScope(s)
	}
	for _, a := range dr.ar.GetRequestedAudience() {
		dr.ar.GrantAudience(a)
	}
	sess := newSubjectSession(p.cfg.Issuer, subject, grant.ID, p.cfg.Keys.Current.ID, time.Now().UTC(),
		sessionKind{idToken: true, jwtAccess: p.cfg.AccessTokenFormat == FormatJWT})
	sess.Claims.AuthTime = authTime.UTC()
	sess.Identity = id.keepOnly(dr.ar.GetGrantedScopes())
	sess.setIDTokenClaims(dr.ar.GetGrantedScopes())
	sess.GrantExpiresAt = grant.ExpiresAt
	dr.ar.SetSession(sess)
	return p.decideDevice(ctx, dr, dr.ar)
}

// DenyDevice records that the user refused: the device's next poll gets access_denied.
func (p *Provider) DenyDevice(ctx context.Context, dr *DeviceRequest) error {
	return p.decideDevice(ctx, dr, nil)
}

func (p *Provider) decideDevice(ctx context.Context, dr *DeviceRequest, ar fosite.Requester) error {
	err := p.store.DecideDeviceCode(ctx, dr.userSig, ar)
	if errors.Is(err, fosite.ErrNotFound) {
		return store.ErrNotFound
	}
	return err
}

// deviceHandler is the token endpoint's part of the device grant: it answers a poll
// from what the store says of the device code, and issues the tokens once, as the
// authorization code handler does for a code.
type deviceHandler struct {
	store    DeviceStorage
	core     oauth2.CoreStorage
	strategy oauth2.CoreStrategy
	idTokens *openid.IDTokenHandleHelper
	enigma   *enigma.HMACStrategy
	config   fosite.Configurator
	// slack is how much sooner than the interval a poll may come before slow_down:
	// network jitter can bring one poll closer to the last than the device sent it.
	slack time.Duration
}

var _ fosite.TokenEndpointHandler = (*deviceHandler)(nil)

func (d *deviceHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool { return false }

func (d *deviceHandler) CanHandleTokenEndpointRequest(_ context.Context, ar fosite.AccessRequester) bool {
	return ar.GetGrantTypes().ExactOne(GrantDeviceCode)
}

func (d *deviceHandler) HandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) error {
	if !d.CanHandleTokenEndpointRequest(ctx, ar) {
		return fosite.ErrUnknownRequest
	}
	if !ar.GetClient().GetGrantTypes().Has(GrantDeviceCode) {
		return fosite.ErrUnauthorizedClient.WithHintf("The client is not allowed to use grant type %q.", GrantDeviceCode)
	}
	code := ar.GetRequestForm().Get("device_code")
	if code == "" {
		return fosite.ErrInvalidRequest.WithHint("The device_code parameter is missing.")
	}
	if err := d.enigma.Validate(ctx, code); err != nil {
		return fosite.ErrInvalidGrant.WithHint("The device code is not one this server issued.")
	}
	stored, err := d.store.PollDeviceCode(ctx, d.enigma.Signature(code), ar.GetClient().GetID(), ar.GetSession(), d.slack)
	switch {
	case errors.Is(err, store.ErrDevicePending):
		return errAuthorizationPending
	case errors.Is(err, store.ErrDeviceSlowDown):
		return errSlowDown
	case errors.Is(err, store.ErrDeviceDenied):
		return errAccessDenied
	case errors.Is(err, store.ErrDeviceExpired):
		return errExpiredToken
	case errors.Is(err, fosite.ErrNotFound):
		return fosite.ErrInvalidGrant.WithHint("The device code is unknown, expired, already used or another client's.")
	case err != nil:
		return fosite.ErrServerError.WithWrap(err)
	}
	ar.SetID(stored.GetID())
	ar.SetRequestedScopes(stored.GetRequestedScopes())
	ar.SetRequestedAudience(stored.GetRequestedAudience())
	for _, s := range stored.GetGrantedScopes() {
		ar.GrantScope(s)
	}
	for _, a := range stored.GetGrantedAudience() {
		ar.GrantAudience(a)
	}
	gt := fosite.GrantType(GrantDeviceCode)
	now := time.Now().UTC()
	at := fosite.GetEffectiveLifespan(ar.GetClient(), gt, fosite.AccessToken, d.config.GetAccessTokenLifespan(ctx))
	ar.GetSession().SetExpiresAt(fosite.AccessToken, now.Add(at).Round(time.Second))
	if rt := fosite.GetEffectiveLifespan(ar.GetClient(), gt, fosite.RefreshToken, d.config.GetRefreshTokenLifespan(ctx)); rt > -1 {
		ar.GetSession().SetExpiresAt(fosite.RefreshToken, now.Add(rt).Round(time.Second))
	}
	return nil
}

func (d *deviceHandler) PopulateTokenEndpointResponse(ctx context.Context, ar fosite.AccessRequester,
	resp fosite.AccessResponder) (err error) {
	if !d.CanHandleTokenEndpointRequest(ctx, ar) {
		return fosite.ErrUnknownRequest
	}
	access, accessSig, err := d.strategy.GenerateAccessToken(ctx, ar)
	if err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	var refresh, refreshSig string
	scopes := d.config.GetRefreshTokenScopes(ctx)
	if ar.GetClient().GetGrantTypes().Has("refresh_token") && (len(scopes) == 0 || ar.GetGrantedScopes().HasOneOf(scopes...)) {
		if refresh, refreshSig, err = d.strategy.GenerateRefreshToken(ctx, ar); err != nil {
			return fosite.ErrServerError.WithWrap(err)
		}
	}
	ctx, err = storage.MaybeBeginTx(ctx, d.core)
	if err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	defer func() {
		if err != nil {
			_ = storage.MaybeRollbackTx(ctx, d.core)
		}
	}()
	// Spent in the transaction that stores the tokens: of two polls racing with one
	// approved code, one gets invalid_grant.
	err = d.store.InvalidateDeviceCodeSession(ctx, d.enigma.Signature(ar.GetRequestForm().Get("device_code")))
	if errors.Is(err, fosite.ErrNotFound) {
		return fosite.ErrInvalidGrant.WithHint("The device code was already used.")
	}
	if err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	if err = d.core.CreateAccessTokenSession(ctx, accessSig, ar.Sanitize(nil)); err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	if refreshSig != "" {
		if err = d.core.CreateRefreshTokenSession(ctx, refreshSig, accessSig, ar.Sanitize(nil)); err != nil {
			return fosite.ErrServerError.WithWrap(err)
		}
	}
	resp.SetAccessToken(access)
	resp.SetTokenType("bearer")
	gt := fosite.GrantType(GrantDeviceCode)
	resp.SetExpiresIn(time.Until(ar.GetSession().GetExpiresAt(fosite.AccessToken)).Round(time.Second))
	resp.SetScopes(ar.GetGrantedScopes())
	if refresh != "" {
		resp.SetExtra("refresh_token", refresh)
	}
	if ar.GetGrantedScopes().Has("openid") {
		sess, ok := ar.GetSession().(openid.Session)
		if !ok {
			return fosite.ErrServerError.WithHint("The session cannot carry an ID token.")
		}
		sess.IDTokenClaims().AccessTokenHash = d.idTokens.GetAccessTokenHash(ctx, ar, resp)
		lifespan := fosite.GetEffectiveLifespan(ar.GetClient(), gt, fosite.IDToken, d.config.GetIDTokenLifespan(ctx))
		if err = d.idTokens.IssueExplicitIDToken(ctx, lifespan, ar, resp); err != nil {
			return fosite.ErrServerError.WithWrap(err)
		}
	}
	if err = storage.MaybeCommitTx(ctx, d.core); err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	return nil
}

// deviceFactory composes deviceHandler (see compose.Factory).
func deviceFactory(st DeviceStorage, e *enigma.HMACStrategy, slack time.Duration) func(fosite.Configurator, any, any) any {
	return func(config fosite.Configurator, storage any, strategy any) any {
		return &deviceHandler{store: st, core: storage.(oauth2.CoreStorage), strategy: strategy.(oauth2.CoreStrategy),
			idTokens: &openid.IDTokenHandleHelper{IDTokenStrategy: strategy.(openid.OpenIDConnectTokenStrategy)},
			enigma:   e, config: config, slack: slack}
	}
}
