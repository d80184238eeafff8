package tokenserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

const verifyRedirectURI = "https://kubeoauth-verify.invalid/callback"

// verifyClient registers a client as `tokenserver verify` does: the verification
// prefix, no owner namespace, skipConsent, authorization code with refresh.
func verifyClient(t *testing.T, in *instance, id, owner string, skipConsent bool) string {
	t.Helper()
	secret := "secret-" + id + "-0123456789abcdefghijklmnop"
	_, err := in.Admin.PutClient(context.Background(), &adminapi.Client{ID: id, Secret: secret, OwnerNamespace: owner,
		ClientMetadata: adminapi.ClientMetadata{Name: "verification " + id,
			GrantTypes:   []string{"client_credentials", "authorization_code", "refresh_token"},
			RedirectURIs: []string{verifyRedirectURI}, Scopes: []string{"offline_access"}, SkipConsent: skipConsent,
			TokenEndpointAuthMethod: adminapi.AuthClientSecretBasic}})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// postVerify sends body to POST /admin/verify/authorize as raw JSON, so that a test
// can send what adminapi's types cannot (an unknown field), and returns the status
// and the error answer.
func postVerify(t *testing.T, in *instance, token string, body any) (int, adminapi.Error) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, in.AdminURL+"/admin/verify/authorize", bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var e adminapi.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e
}

// The admin API approves an authorization request of a verification client for the
// fixed verification subject; the code is exchanged at the token endpoint with the
// PKCE verifier and gives a refresh token that rotates, and the approval is a
// first-party grant that goes with the client.
func TestVerifyAuthorizeIssuesACodeTheTokenEndpointExchanges(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	const id = adminapi.VerifyClientIDPrefix + "0123456789abcdef"
	secret := verifyClient(t, in, id, "", true)
	checker := confidentialClient(t, in, "checker")
	cfg := &oauth2.Config{ClientID: id, ClientSecret: secret, RedirectURL: verifyRedirectURI, Scopes: []string{"offline_access"},
		Endpoint: oauth2.Endpoint{TokenURL: in.URL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}}
	verifier := oauth2.GenerateVerifier()
	authorize := func() *adminapi.VerifyAuthorization {
		t.Helper()
		got, err := in.Admin.VerifyAuthorize(ctx, &adminapi.VerifyAuthorizeRequest{ClientID: id, RedirectURI: verifyRedirectURI,
			Scope: "offline_access", State: "state-0123456789", CodeChallenge: oauth2.S256ChallengeFromVerifier(verifier),
			CodeChallengeMethod: "S256"})
		if err != nil {
			t.Fatalf("verify authorize: %v", err)
		}
		if got.Code == "" || got.State != "state-0123456789" {
			t.Fatalf("verify authorize = %+v; want a code and the state", got)
		}
		return got
	}
	octx := context.WithValue(ctx, oauth2.HTTPClient, httpClient)

	// The code is bound to the challenge: without the verifier it is worthless.
	if _, err := cfg.Exchange(octx, authorize().Code, oauth2.VerifierOption(oauth2.GenerateVerifier())); err == nil {
		t.Error("the code was exchanged with another PKCE verifier")
	}
	tok, err := cfg.Exchange(octx, authorize().Code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("the code gave no refresh token")
	}
	got := introspect(t, in, tok.AccessToken, "checker", checker)
	if got["active"] != true || got["sub"] != adminapi.VerifySubject || got["client_id"] != id {
		t.Errorf("introspection = %v; want active, sub %s, client %s", got, adminapi.VerifySubject, id)
	}
	next, err := cfg.TokenSource(octx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil || next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh = %+v, %v; want a rotated refresh token", next, err)
	}

	gs, err := in.Admin.ListGrants(ctx, id, "")
	if err != nil || len(gs) != 1 || gs[0].Subject != adminapi.VerifySubject || gs[0].Source != adminapi.SourceFirstParty ||
		gs[0].ExpiresAt == nil {
		t.Fatalf("grants of the verification client = %+v, %v; want one first-party grant of %s, with an expiry",
			gs, err, adminapi.VerifySubject)
	}
	if err := in.Admin.DeleteClient(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if gs, err := in.Admin.ListGrants(ctx, id, ""); err != nil || len(gs) != 0 {
		t.Errorf("grants after the client was deleted = %+v, %v; want none", gs, err)
	}
	if got := introspect(t, in, next.AccessToken, "checker", checker); got["active"] != false {
		t.Errorf("a token of the deleted client: %v; want inactive", got)
	}
}

// The endpoint serves only an administrator's verification client, only with an
// exact registered redirect URI, a registered scope and PKCE, only with the admin
// token, and never for a subject of the caller's choosing: each refusal names the
// field, and no code is issued.
func TestVerifyAuthorizeRefuses(t *testing.T) {
	in := start(t, setup{})
	const id = adminapi.VerifyClientIDPrefix + "aaaaaaaaaaaaaaaa"
	verifyClient(t, in, id, "", true)
	verifyClient(t, in, adminapi.VerifyClientIDPrefix+"owned", "tenant-a", true)
	verifyClient(t, in, adminapi.VerifyClientIDPrefix+"asks", "", false)
	confidentialClient(t, in, "grafana")

	valid := func() map[string]any {
		return map[string]any{"clientID": id, "redirectURI": verifyRedirectURI, "scope": "offline_access",
			"state": "state-0123456789", "codeChallenge": oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier()),
			"codeChallengeMethod": "S256"}
	}
	tests := map[string]struct {
		change     func(map[string]any)
		token      string // default the admin token
		wantStatus int
		wantField  string
	}{
		"no admin token":       {change: func(map[string]any) {}, token: "-", wantStatus: http.StatusUnauthorized},
		"a wrong admin token":  {change: func(map[string]any) {}, token: "not-the-admin-token", wantStatus: http.StatusUnauthorized},
		"a non-verify client":  {change: func(b map[string]any) { b["clientID"] = "grafana" }, wantStatus: http.StatusForbidden, wantField: "clientID"},
		"an unknown client":    {change: func(b map[string]any) { b["clientID"] = adminapi.VerifyClientIDPrefix + "nobody" }, wantStatus: http.StatusBadRequest, wantField: "clientID"},
		"a namespace's client": {change: func(b map[string]any) { b["clientID"] = adminapi.VerifyClientIDPrefix + "owned" }, wantStatus: http.StatusForbidden, wantField: "clientID"},
		"a client that asks for consent": {change: func(b map[string]any) { b["clientID"] = adminapi.VerifyClientIDPrefix + "asks" },
			wantStatus: http.StatusForbidden, wantField: "clientID"},
		"a wrong redirect URI": {change: func(b map[string]any) { b["redirectURI"] = "https://attacker.example/callback" },
			wantStatus: http.StatusBadRequest, wantField: "redirectURI"},
		"no redirect URI":         {change: func(b map[string]any) { delete(b, "redirectURI") }, wantStatus: http.StatusBadRequest, wantField: "redirectURI"},
		"no PKCE":                 {change: func(b map[string]any) { delete(b, "codeChallenge"); delete(b, "codeChallengeMethod") }, wantStatus: http.StatusBadRequest, wantField: "codeChallengeMethod"},
		"no code challenge":       {change: func(b map[string]any) { delete(b, "codeChallenge") }, wantStatus: http.StatusBadRequest, wantField: "codeChallenge"},
		"PKCE plain":              {change: func(b map[string]any) { b["codeChallengeMethod"] = "plain" }, wantStatus: http.StatusBadRequest, wantField: "codeChallengeMethod"},
		"no state":                {change: func(b map[string]any) { delete(b, "state") }, wantStatus: http.StatusBadRequest, wantField: "state"},
		"a guessable state":       {change: func(b map[string]any) { b["state"] = "1" }, wantStatus: http.StatusBadRequest, wantField: "state"},
		"an unregistered scope":   {change: func(b map[string]any) { b["scope"] = "offline_access zones.write" }, wantStatus: http.StatusBadRequest, wantField: "scope"},
		"a subject of the caller": {change: func(b map[string]any) { b["subject"] = "alice" }, wantStatus: http.StatusBadRequest, wantField: "subject"},
		"a user to act for":       {change: func(b map[string]any) { b["username"] = "alice" }, wantStatus: http.StatusBadRequest, wantField: "username"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			body := valid()
			tt.change(body)
			token := adminToken
			switch tt.token {
			case "-":
				token = ""
			case "":
			default:
				token = tt.token
			}
			status, e := postVerify(t, in, token, body)
			if status != tt.wantStatus || e.Field != tt.wantField || e.Message == "" {
				t.Errorf("answer = %d %+v; want %d naming field %q", status, e, tt.wantStatus, tt.wantField)
			}
		})
	}
	// Nothing was approved for anyone: no grant of any client, for any subject.
	gs, err := in.Admin.ListGrants(context.Background(), "", "")
	if err != nil || len(gs) != 0 {
		t.Errorf("grants after refused requests = %+v, %v; want none", gs, err)
	}
	// The valid request, for contrast, is approved.
	if status, e := postVerify(t, in, adminToken, valid()); status != http.StatusOK {
		t.Errorf("the valid request: %d %+v", status, e)
	}
	var apiErr *adminapi.Error
	_, err = in.Admin.VerifyAuthorize(context.Background(), &adminapi.VerifyAuthorizeRequest{ClientID: "grafana"})
	if !errors.As(err, &apiErr) || apiErr.Field != "clientID" || !strings.Contains(err.Error(), "403") {
		t.Errorf("the Go client with a non-verify client: %v; want 403 naming clientID", err)
	}
}
