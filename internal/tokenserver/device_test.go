package tokenserver_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

const deviceGrant = "urn:ietf:params:oauth:grant-type:device_code"

// deviceClient registers a public client for the device grant, with no redirect URI.
func deviceClient(t *testing.T, in *instance, id string) *oauth2.Config {
	t.Helper()
	_, err := in.Admin.PutClient(context.Background(), &adminapi.Client{
		ID: id, OwnerNamespace: "media", ClientMetadata: adminapi.ClientMetadata{
			Name: "TV app " + id, OwnerTeam: "living-room", GrantTypes: []string{deviceGrant, "refresh_token"},
			Scopes:                  []string{"openid", "profile", "offline_access", "zones.read"},
			TokenEndpointAuthMethod: "none",
		}})
	if err != nil {
		t.Fatal(err)
	}
	return &oauth2.Config{ClientID: id, Scopes: []string{"openid", "profile", "offline_access", "zones.read"},
		Endpoint: oauth2.Endpoint{DeviceAuthURL: in.URL + "/oauth2/device/auth", TokenURL: in.URL + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInParams}}
}

// enterCode walks the device pages as a person: from url (the verification URI, with
// or without the code) through sign-in to the confirmation page, typing typed when the
// code is not filled in. It returns the confirmation page's form.
func (b *browser) enterCode(in *instance, u, typed string) (reply, string) {
	b.t.Helper()
	resp, page := b.get(u)
	if strings.Contains(page, `action="/login"`) {
		f := formFields(page)
		f.Set("username", "alice")
		f.Set("password", alicePassword)
		resp, page = b.post(in.URL+"/login", f)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="user_code"`) {
		b.t.Fatalf("device page: %d %.400s; want the code form", resp.StatusCode, page)
	}
	f := formFields(page)
	if typed != "" {
		f.Set("user_code", typed)
	} else if m := regexp.MustCompile(`id="user_code"[^>]*value="([^"]*)"`).FindStringSubmatch(page); m != nil {
		f.Set("user_code", m[1])
	}
	return b.post(in.URL+"/device", f)
}

// decide posts the decision on a confirmation page.
func (b *browser) decide(in *instance, confirm, decision string) (reply, string) {
	b.t.Helper()
	if !strings.Contains(confirm, `id="approve"`) {
		b.t.Fatalf("no confirmation page: %.400s", confirm)
	}
	f := formFields(confirm)
	f.Set("decision", decision)
	return b.post(in.URL+"/device", f)
}

func pollOnce(t *testing.T, in *instance, clientID, deviceCode string) (int, map[string]any) {
	t.Helper()
	return postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {deviceGrant}, "client_id": {clientID},
		"device_code": {deviceCode}}, "", "")
}

// The device flow end to end with golang.org/x/oauth2 polling on the device side while
// alice signs in on the real pages, enters the code from verification_uri_complete and
// approves; the tokens carry an ID token go-oidc accepts and a refresh token that
// works; the device code is then spent.
func TestDeviceFlow(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{deviceInterval: time.Second})
	cfg := deviceClient(t, in, "tv")

	var disc map[string]any
	getJSON(t, in.URL+"/.well-known/openid-configuration", &disc)
	grants, _ := disc["grant_types_supported"].([]any)
	if disc["device_authorization_endpoint"] != in.URL+"/oauth2/device/auth" || !slices.Contains(grants, any(deviceGrant)) {
		t.Errorf("discovery: device_authorization_endpoint %v, grant_types_supported %v", disc["device_authorization_endpoint"], grants)
	}

	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`).MatchString(da.UserCode) ||
		da.VerificationURI != in.URL+"/device" || da.Interval != 1 || time.Until(da.Expiry) < 9*time.Minute ||
		da.VerificationURIComplete != in.URL+"/device?user_code="+da.UserCode {
		t.Fatalf("device authorization = %+v", da)
	}
	type result struct {
		tok *oauth2.Token
		err error
	}
	polled := make(chan result, 1)
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	go func() {
		tok, err := cfg.DeviceAccessToken(pctx, da)
		polled <- result{tok, err}
	}()

	b := newBrowser(t)
	resp, confirm := b.enterCode(in, da.VerificationURIComplete, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(confirm, "TV app tv") || !strings.Contains(confirm, "<strong>media</strong>") ||
		!strings.Contains(confirm, "living-room") || !strings.Contains(confirm, da.UserCode) || !strings.Contains(confirm, "Read your DNS zones") {
		t.Fatalf("confirmation page: %d %.800s; want the app, its owner, the code and the scopes", resp.StatusCode, confirm)
	}
	if resp, page := b.decide(in, confirm, "approve"); resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="notice"`) {
		t.Fatalf("approval: %d %.400s", resp.StatusCode, page)
	}
	var r result
	select {
	case r = <-polled:
	case <-time.After(30 * time.Second):
		t.Fatal("the device got no tokens within 30s of the approval")
	}
	if r.err != nil {
		t.Fatalf("DeviceAccessToken: %v", r.err)
	}
	provider, err := oidc.NewProvider(ctx, in.URL)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := r.tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: "tv"}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("go-oidc rejected the ID token: %v", err)
	}
	var claims map[string]any
	_ = idt.Claims(&claims)
	if idt.Subject != "alice" || claims["preferred_username"] != "alice" || claims["at_hash"] == nil {
		t.Errorf("ID token claims %v; want alice's, with at_hash", claims)
	}
	if ui, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(r.tok)); err != nil || ui.Subject != "alice" {
		t.Errorf("userinfo = %+v, %v; want alice", ui, err)
	}
	if r.tok.RefreshToken == "" {
		t.Fatal("no refresh token despite offline_access")
	}
	refreshed, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: r.tok.RefreshToken}).Token()
	if err != nil || refreshed.AccessToken == "" || refreshed.Extra("id_token") == nil {
		t.Errorf("refresh = %v, %v; want new tokens with an ID token", refreshed, err)
	}
	if code, body := pollOnce(t, in, "tv", da.DeviceCode); code != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Errorf("the device code again: %d %v; want invalid_grant", code, body)
	}
	if g, err := in.Admin.ListGrants(ctx, "tv", "alice"); err != nil || len(g) != 1 {
		t.Errorf("grants = %+v, %v; want alice's consent to tv, revocable on the account page", g, err)
	}
}

// A device that polls faster than its interval gets slow_down and must then wait 5
// seconds longer; a device whose user refused gets access_denied from x/oauth2;
// a code entered twice, a code of another client, and a code typed in lower case
// without its dash.
func TestDevicePollingAndDenial(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{deviceInterval: time.Second})
	cfg := deviceClient(t, in, "tv")
	deviceClient(t, in, "other")

	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := pollOnce(t, in, "tv", da.DeviceCode); body["error"] != "authorization_pending" {
		t.Fatalf("first poll: %d %v; want authorization_pending", code, body)
	}
	if code, body := pollOnce(t, in, "tv", da.DeviceCode); code != http.StatusBadRequest || body["error"] != "slow_down" {
		t.Fatalf("an immediate second poll: %d %v; want slow_down", code, body)
	}
	// The interval is 6 s now: a poll after the old 1 s is still too fast.
	time.Sleep(1500 * time.Millisecond)
	if _, body := pollOnce(t, in, "tv", da.DeviceCode); body["error"] != "slow_down" {
		t.Errorf("a poll 1.5 s later: %v; want slow_down, the interval having grown by 5 s", body)
	}
	if _, body := pollOnce(t, in, "other", da.DeviceCode); body["error"] != "invalid_grant" {
		t.Errorf("tv's device code polled by client other: %v; want invalid_grant", body)
	}

	// Another device, whose user code is typed in lower case, without the dash;
	// then denied.
	da, err = cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	typed := strings.ToLower(strings.ReplaceAll(da.UserCode, "-", ""))
	b := newBrowser(t)
	_, confirm := b.enterCode(in, in.URL+"/device", typed)
	if resp, page := b.decide(in, confirm, "deny"); resp.StatusCode != http.StatusOK || !strings.Contains(page, "not connected") {
		t.Fatalf("denial: %d %.400s", resp.StatusCode, page)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = cfg.DeviceAccessToken(pctx, da)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "access_denied" || re.Response.StatusCode != http.StatusBadRequest {
		t.Errorf("DeviceAccessToken after the denial: %v; want 400 access_denied (RFC 8628 section 3.5, RFC 6749 section 5.2)", err)
	}
	// The code was spent by the decision.
	if resp, page := b.enterCode(in, in.URL+"/device", da.UserCode); resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "wrong or has expired") {
		t.Errorf("the code entered again: %d %.400s; want it refused", resp.StatusCode, page)
	}
}

// Wrong user codes are refused, and guessing is throttled per user: after the
// allowance a right code is refused too; an expired device code gets expired_token,
// and its user code is refused on the page.
func TestDeviceCodeGuessingAndExpiry(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{deviceInterval: time.Second, deviceLifespan: 3 * time.Second,
		throttle: tokenserver.LoginThrottle{PerUser: 3, PerIP: 100, Refill: time.Hour}})
	cfg := deviceClient(t, in, "tv")
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t)
	for i, wrong := range []string{"BBBB-BBBB", "not a code", "BCDF-GHJK"} {
		if resp, page := b.enterCode(in, in.URL+"/device", wrong); resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "wrong or has expired") {
			t.Fatalf("wrong code %d: %d %.400s; want it refused", i, resp.StatusCode, page)
		}
	}
	if resp, page := b.enterCode(in, in.URL+"/device", da.UserCode); resp.StatusCode != http.StatusTooManyRequests || strings.Contains(page, `id="approve"`) {
		t.Errorf("the right code after 3 wrong ones: %d %.400s; want 429", resp.StatusCode, page)
	}

	// Expiry: poll at the interval until the server stops saying pending.
	var body map[string]any
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		_, body = pollOnce(t, in, "tv", da.DeviceCode)
		if body["error"] != "authorization_pending" {
			break
		}
		time.Sleep(1100 * time.Millisecond) // the device's interval
	}
	if body["error"] != "expired_token" {
		t.Errorf("polling past the expiry: %v; want expired_token", body)
	}
	// alice is still throttled: from another address the expired code is refused
	// as wrong; here it must at least not be offered for approval.
	if resp, page := newBrowser(t).enterCode(in, in.URL+"/device", da.UserCode); resp.StatusCode < 400 || strings.Contains(page, `id="approve"`) {
		t.Errorf("an expired code on the page: %d %.400s; want it refused", resp.StatusCode, page)
	}
}

// Polls racing with one approved device code get one set of tokens between them:
// the code is spent in the transaction that stores them.
func TestDeviceCodeUsedOnceUnderRace(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{deviceInterval: time.Second})
	cfg := deviceClient(t, in, "tv")
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t)
	_, confirm := b.enterCode(in, da.VerificationURIComplete, "")
	if resp, page := b.decide(in, confirm, "approve"); resp.StatusCode != http.StatusOK {
		t.Fatalf("approval: %d %.400s", resp.StatusCode, page)
	}
	const n = 6
	type answer struct {
		code int
		body map[string]any
	}
	answers := make(chan answer, n)
	start := make(chan struct{})
	for range n {
		go func() {
			<-start
			code, body := pollOnce(t, in, "tv", da.DeviceCode)
			answers <- answer{code, body}
		}()
	}
	close(start)
	tokens := 0
	for range n {
		a := <-answers
		switch {
		case a.code == http.StatusOK && a.body["access_token"] != nil:
			tokens++
		case a.code == http.StatusBadRequest && (a.body["error"] == "invalid_grant" || a.body["error"] == "slow_down"):
		default:
			t.Errorf("a racing poll: %d %v", a.code, a.body)
		}
	}
	if tokens != 1 {
		t.Errorf("%d of %d racing polls got tokens; want exactly 1", tokens, n)
	}
}

// A confidential device client authenticates at the device endpoint (x/oauth2 with
// client_secret_post); a wrong secret gets no code. The user-code form refuses a post
// without the session's CSRF token, and a client without the grant gets no code.
func TestDeviceConfidentialClientAndCSRF(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{deviceInterval: time.Second})
	secret := "secret-kiosk-0123456789abcdefghijklmnop"
	if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: "kiosk", Secret: secret, OwnerNamespace: "media",
		ClientMetadata: adminapi.ClientMetadata{Name: "Kiosk", GrantTypes: []string{deviceGrant}, Scopes: []string{"openid"},
			TokenEndpointAuthMethod: "client_secret_post"}}); err != nil {
		t.Fatal(err)
	}
	cfg := &oauth2.Config{ClientID: "kiosk", ClientSecret: secret, Scopes: []string{"openid"},
		Endpoint: oauth2.Endpoint{DeviceAuthURL: in.URL + "/oauth2/device/auth", TokenURL: in.URL + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInParams}}
	var re *oauth2.RetrieveError
	if _, err := cfg.DeviceAuth(ctx, oauth2.SetAuthURLParam("client_secret", "wrong-secret-0123456789abcdefghijkl")); !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Errorf("DeviceAuth with a wrong secret: %v; want invalid_client", err)
	}
	da, err := cfg.DeviceAuth(ctx, oauth2.SetAuthURLParam("client_secret", secret))
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t)
	_, page := b.get(da.VerificationURIComplete)
	f := formFields(page)
	f.Set("username", "alice")
	f.Set("password", alicePassword)
	if resp, page := b.post(in.URL+"/login", f); resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="user_code"`) {
		t.Fatalf("sign-in from the device page: %d %.400s", resp.StatusCode, page)
	}
	if resp, page := b.post(in.URL+"/device", url.Values{"user_code": {da.UserCode}, "csrf": {"forged"}}); resp.StatusCode != http.StatusForbidden || strings.Contains(page, `id="approve"`) {
		t.Errorf("a user code posted without the CSRF token: %d %.300s; want 403", resp.StatusCode, page)
	}
	_, confirm := b.enterCode(in, da.VerificationURIComplete, "")
	b.decide(in, confirm, "approve")
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := cfg.DeviceAccessToken(pctx, da)
	if err != nil || tok.Extra("id_token") == nil || tok.RefreshToken != "" {
		t.Errorf("DeviceAccessToken = %v, %v; want tokens with an ID token and, without refresh_token, no refresh token", tok, err)
	}

	deviceClient(t, in, "tv")
	confidentialClient(t, in, "grafana") // no device grant
	code, body := postForm(t, in.URL+"/oauth2/device/auth", url.Values{"client_id": {"grafana"}}, "grafana", "secret-grafana-0123456789abcdefghijklmnop")
	if code != http.StatusBadRequest || body["error"] != "unauthorized_client" {
		t.Errorf("device authorization by a client without the grant: %d %v; want unauthorized_client", code, body)
	}
	code, body = postForm(t, in.URL+"/oauth2/device/auth", url.Values{"client_id": {"tv"}, "scope": {"zones.write"}}, "", "")
	if code != http.StatusBadRequest || body["error"] != "invalid_scope" {
		t.Errorf("device authorization for a scope the client lacks: %d %v; want invalid_scope", code, body)
	}
}

// A consent grant is stored only with the approval it belongs to: of several people
// approving one code at once (a phished code clicked by many), those told the code
// was used meanwhile get no grant, which would otherwise give the client silent
// code-flow tokens for them later.
func TestDeviceGrantOnlyWithTheApproval(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{deviceInterval: time.Second})
	const n = 6
	hash := bcryptHash(t, alicePassword, bcrypt.MinCost)
	users := make([]string, n)
	lines := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("user%d", i)
		lines[i] = users[i] + ":" + hash
	}
	writeUsers(t, in.Users, lines...)
	cfg := deviceClient(t, in, "tv")
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	browsers, confirms := make([]*browser, n), make([]string, n)
	for i, u := range users {
		browsers[i] = newBrowser(t)
		if resp, page := browsers[i].signIn(in, u, alicePassword); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s's sign-in: %d %.400s", u, resp.StatusCode, page)
		}
		_, confirms[i] = browsers[i].enterCode(in, in.URL+"/device", da.UserCode)
	}
	statuses := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f := formFields(confirms[i])
			f.Set("decision", "approve")
			resp, err := browsers[i].hc.PostForm(in.URL+"/device", f)
			if err != nil {
				t.Error(err)
				return
			}
			_ = resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	approved := 0
	for i, u := range users {
		gs, err := in.Admin.ListGrants(ctx, "tv", u)
		if err != nil {
			t.Fatal(err)
		}
		if statuses[i] == http.StatusOK {
			approved++
		}
		if (statuses[i] == http.StatusOK) != (len(gs) == 1) {
			t.Errorf("%s: approval answered %d, grants %+v; want a grant exactly when the approval was recorded", u, statuses[i], gs)
		}
	}
	if approved != 1 {
		t.Errorf("%d of %d approvals of one code recorded (%v); want exactly 1", approved, n, statuses)
	}
}

// The poll interval is sent in whole seconds (RFC 8628): one that is not is refused
// at start, not sent as 0 (or rounded down) with slow_down never coming.
func TestDeviceIntervalInWholeSeconds(t *testing.T) {
	for _, d := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond} {
		err := tokenserver.Serve(context.Background(), tokenserver.Options{AdminToken: adminToken, DeviceInterval: d})
		if err == nil || !strings.Contains(err.Error(), "device poll interval "+d.String()+" (--device-poll-interval): must be a whole number of seconds") {
			t.Errorf("Serve with a device poll interval of %s: %v; want it refused", d, err)
		}
	}
}
