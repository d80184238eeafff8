package tokenserver_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

// userClaims are the claims about the user an app reads from an ID token or userinfo.
type userClaims struct {
	Subject           string   `json:"sub"`
	PreferredUsername string   `json:"preferred_username"`
	Name              *string  `json:"name"`
	Email             *string  `json:"email"`
	EmailVerified     *bool    `json:"email_verified"`
	Groups            []string `json:"groups"`
}

func (c userClaims) has() []string {
	var out []string
	if c.Name != nil {
		out = append(out, "name")
	}
	if c.Email != nil {
		out = append(out, "email")
	}
	if c.EmailVerified != nil {
		out = append(out, "email_verified")
	}
	if c.Groups != nil {
		out = append(out, "groups")
	}
	return out
}

// aliceEntry is alice in the structured users file.
func aliceEntry(t *testing.T) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(alicePassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return "- username: alice\n  passwordHash: '" + string(hash) + "'\n  name: Alice Liddell\n" +
		"  email: alice@example.com\n  emailVerified: true\n  groups: [platform, admins]"
}

// openidOnlyClient registers a client allowed openid and offline_access and nothing
// else: the standard scopes come with openid.
func openidOnlyClient(t *testing.T, in *instance, id string, scopes ...string) (*oauth2.Config, *oidc.IDTokenVerifier) {
	t.Helper()
	secret := "secret-" + id + "-0123456789abcdefghijklmnop"
	_, err := in.Admin.PutClient(context.Background(), &adminapi.Client{
		ID: id, Secret: secret, OwnerNamespace: "observability", ClientMetadata: adminapi.ClientMetadata{
			Name: "App " + id, GrantTypes: []string{"authorization_code", "refresh_token"},
			RedirectURIs: []string{redirectURI}, Scopes: scopes, TokenEndpointAuthMethod: "client_secret_basic",
		}})
	if err != nil {
		t.Fatal(err)
	}
	provider, err := oidc.NewProvider(context.Background(), in.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &oauth2.Config{ClientID: id, ClientSecret: secret, RedirectURL: redirectURI,
		Endpoint: provider.Endpoint()}
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	return cfg, provider.Verifier(&oidc.Config{ClientID: id})
}

// signIn runs the code flow for scopes through alice's browser and returns the tokens.
func signIn(t *testing.T, in *instance, b *browser, cfg *oauth2.Config, decision string, scopes ...string) *oauth2.Token {
	t.Helper()
	c := *cfg
	c.Scopes = scopes
	v := oauth2.GenerateVerifier()
	cb := b.authorize(in, c.AuthCodeURL("state-claims-01", oauth2.S256ChallengeOption(v)), decision)
	if cb.Get("code") == "" {
		t.Fatalf("scopes %v: callback %v; want a code", scopes, cb)
	}
	tok, err := c.Exchange(context.Background(), cb.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func idTokenClaims(t *testing.T, verifier *oidc.IDTokenVerifier, raw any) userClaims {
	t.Helper()
	s, _ := raw.(string)
	idt, err := verifier.Verify(context.Background(), s)
	if err != nil {
		t.Fatalf("go-oidc rejected the ID token: %v", err)
	}
	var c userClaims
	if err := idt.Claims(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

func userinfoClaims(t *testing.T, in *instance, tok *oauth2.Token) userClaims {
	t.Helper()
	provider, err := oidc.NewProvider(context.Background(), in.URL)
	if err != nil {
		t.Fatal(err)
	}
	ui, err := provider.UserInfo(context.Background(), oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatal(err)
	}
	var c userClaims
	if err := ui.Claims(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// The ID token (verified by go-oidc) and userinfo carry name, email and groups for
// exactly the scopes granted, a client registered with only openid may ask for
// them, and a refreshed ID token keeps them.
func TestClaimsFollowGrantedScopes(t *testing.T) {
	in := start(t, setup{})
	// The server started with the htpasswd file; the structured one replaces it while
	// it runs, as the kubelet updates a Secret, and is read again.
	writeUsers(t, in.Users, aliceEntry(t))
	cfg, verifier := openidOnlyClient(t, in, "wiki", "openid", "offline_access")
	b := newBrowser(t)

	tests := []struct {
		scopes []string
		want   []string
	}{
		{[]string{"openid"}, nil},
		{[]string{"openid", "email"}, []string{"email", "email_verified"}},
		{[]string{"openid", "profile"}, []string{"name"}},
		{[]string{"openid", "groups"}, []string{"groups"}},
		{[]string{"openid", "offline_access", "profile", "email", "groups"}, []string{"name", "email", "email_verified", "groups"}},
	}
	var full *oauth2.Token
	for _, tc := range tests {
		t.Run(strings.Join(tc.scopes, "+"), func(t *testing.T) {
			// Each new scope needs the user's consent; the first one is the sign-in too.
			tok := signIn(t, in, b, cfg, "approve", tc.scopes...)
			for where, c := range map[string]userClaims{
				"ID token": idTokenClaims(t, verifier, tok.Extra("id_token")),
				"userinfo": userinfoClaims(t, in, tok),
			} {
				if got := c.has(); !slices.Equal(got, tc.want) {
					t.Errorf("%s for scopes %v carries %v; want %v", where, tc.scopes, got, tc.want)
				}
				if c.Subject != "alice" {
					t.Errorf("%s: sub %q; want alice", where, c.Subject)
				}
			}
			full = tok
		})
	}
	// The consent page says what each standard scope shares.
	notes, _ := openidOnlyClient(t, in, "notes", "openid")
	notes.Scopes = []string{"openid", "profile", "email", "groups"}
	_, page := b.get(notes.AuthCodeURL("state-claims-03", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	for _, d := range []string{"See your name and username", "See your email address", "See the groups you belong to"} {
		if !strings.Contains(page, d) {
			t.Errorf("the consent page for profile, email and groups lacks %q: %.600s", d, page)
		}
	}

	want := userClaims{Subject: "alice", PreferredUsername: "alice", Name: ptr("Alice Liddell"),
		Email: ptr("alice@example.com"), EmailVerified: ptr(true), Groups: []string{"platform", "admins"}}
	if got := idTokenClaims(t, verifier, full.Extra("id_token")); !sameClaims(got, want) {
		t.Errorf("ID token claims %+v; want %+v", got, want)
	}
	if got := userinfoClaims(t, in, full); !sameClaims(got, want) {
		t.Errorf("userinfo claims %+v; want %+v", got, want)
	}

	// A refresh, as golang.org/x/oauth2 does it when the access token has expired.
	full.Expiry = full.Expiry.Add(-24 * 3600e9)
	refreshed, err := cfg.TokenSource(context.Background(), full).Token()
	if err != nil || refreshed.AccessToken == full.AccessToken {
		t.Fatalf("refresh: %v (same access token: %v)", err, refreshed != nil && refreshed.AccessToken == full.AccessToken)
	}
	if got := idTokenClaims(t, verifier, refreshed.Extra("id_token")); !sameClaims(got, want) {
		t.Errorf("refreshed ID token claims %+v; want %+v", got, want)
	}
	if got := userinfoClaims(t, in, refreshed); !sameClaims(got, want) {
		t.Errorf("userinfo with the refreshed token %+v; want %+v", got, want)
	}

	// The platform team moves alice to another group: the file is read again and the
	// next authorization carries the new groups (her consent stands, so no page).
	writeUsers(t, in.Users, strings.Replace(aliceEntry(t), "[platform, admins]", "[auditors]", 1))
	tok := signIn(t, in, b, cfg, "", "openid", "offline_access", "profile", "email", "groups")
	if got := idTokenClaims(t, verifier, tok.Extra("id_token")); !slices.Equal(got.Groups, []string{"auditors"}) {
		t.Errorf("after the users file changed, groups %v; want [auditors]", got.Groups)
	}
}

func ptr[T any](v T) *T { return &v }

func sameClaims(a, b userClaims) bool {
	eq := func(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.Subject == b.Subject && a.PreferredUsername == b.PreferredUsername && eq(a.Name, b.Name) &&
		eq(a.Email, b.Email) && (a.EmailVerified == nil) == (b.EmailVerified == nil) &&
		(a.EmailVerified == nil || *a.EmailVerified == *b.EmailVerified) && slices.Equal(a.Groups, b.Groups)
}

// A scope the client was not given is refused with invalid_scope before anyone signs
// in; the standard scopes come only with openid.
func TestUnknownScopeIsInvalidScope(t *testing.T) {
	in := start(t, setup{})
	openidCfg, _ := openidOnlyClient(t, in, "wiki", "openid")
	plainCfg, _ := openidOnlyClient(t, in, "batch", "zones.read")
	tests := map[string]struct {
		cfg    *oauth2.Config
		scopes []string
		bad    string
	}{
		"a scope nobody registered":       {openidCfg, []string{"openid", "zones.write"}, "zones.write"},
		"offline_access not registered":   {openidCfg, []string{"openid", "offline_access"}, "offline_access"},
		"email without openid registered": {plainCfg, []string{"zones.read", "email"}, "email"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := *tc.cfg
			c.Scopes = tc.scopes
			resp, _ := newBrowser(t).get(c.AuthCodeURL("state-claims-02", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			loc, err := resp.Location()
			if err != nil || !strings.HasPrefix(loc.String(), redirectURI) {
				t.Fatalf("want a redirect to the app, got %d %v", resp.StatusCode, loc)
			}
			q := loc.Query()
			if q.Get("error") != "invalid_scope" || q.Get("code") != "" || q.Get("state") != "state-claims-02" {
				t.Errorf("callback %v; want error=invalid_scope with the state", q)
			}
			if !strings.Contains(q.Get("error_description"), "'"+tc.bad+"'") {
				t.Errorf("error_description %q does not name the scope %s", q.Get("error_description"), tc.bad)
			}
		})
	}
}

// Discovery tells apps which scopes and claims to ask for.
func TestDiscoveryListsScopesAndClaims(t *testing.T) {
	in := start(t, setup{})
	var doc struct {
		Scopes []string `json:"scopes_supported"`
		Claims []string `json:"claims_supported"`
	}
	if code := getJSON(t, in.URL+"/.well-known/openid-configuration", &doc); code != 200 {
		t.Fatalf("discovery: %d", code)
	}
	for _, s := range []string{"openid", "offline_access", "profile", "email", "groups", "zones.read"} {
		if !slices.Contains(doc.Scopes, s) {
			t.Errorf("scopes_supported %v lacks %s", doc.Scopes, s)
		}
	}
	for _, c := range []string{"sub", "preferred_username", "name", "email", "email_verified", "groups"} {
		if !slices.Contains(doc.Claims, c) {
			t.Errorf("claims_supported %v lacks %s", doc.Claims, c)
		}
	}
}

// The structured users file: parsed with every attribute, htpasswd lines still read,
// and each mistake named by entry and field.
func TestUsersFileFormats(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	hash := string(h)
	write := func(t *testing.T, content string) string {
		path := filepath.Join(t.TempDir(), "users")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	t.Run("structured", func(t *testing.T) {
		users, err := tokenserver.LoadUsers(write(t, "# platform team\n- username: alice\n  passwordHash: '"+hash+
			"'\n  name: Alice Liddell\n  email: alice@example.com\n  emailVerified: true\n  groups: [platform, admins]\n"+
			"- username: bob\n  passwordHash: '"+hash+"'\n  email: bob@example.com\n"))
		if err != nil {
			t.Fatal(err)
		}
		a, b := users["alice"], users["bob"]
		want := oauth.Identity{Name: "Alice Liddell", Email: "alice@example.com", EmailVerified: true, Groups: []string{"platform", "admins"}}
		if len(users) != 2 || string(a.Hash) != hash || a.Name != want.Name || a.Email != want.Email || !a.EmailVerified ||
			!slices.Equal(a.Groups, want.Groups) || b.Email != "bob@example.com" || b.EmailVerified {
			t.Errorf("users = %+v", users)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		users, err := tokenserver.LoadUsers(write(t, `[{"username": "alice", "passwordHash": "`+hash+`", "groups": ["platform"]}]`))
		if err != nil || !slices.Equal(users["alice"].Groups, []string{"platform"}) {
			t.Errorf("users = %+v, %v", users, err)
		}
	})
	t.Run("htpasswd", func(t *testing.T) {
		users, err := tokenserver.LoadUsers(write(t, "# htpasswd -B\nalice:"+hash+"\nbob:"+hash+"\n"))
		if err != nil || len(users) != 2 || string(users["bob"].Hash) != hash || users["bob"].Email != "" {
			t.Errorf("users = %+v, %v", users, err)
		}
	})
	entry := func(fields string) string { return "- username: alice\n  passwordHash: '" + hash + "'\n" + fields }
	bad := map[string]struct{ content, want string }{
		"a missing hash":       {"- username: alice\n- username: bob\n", "users[0] (alice): passwordHash: required"},
		"not a bcrypt hash":    {"- username: alice\n  passwordHash: secret\n", "users[0] (alice): passwordHash: not a bcrypt hash"},
		"a missing username":   {entry("") + "- passwordHash: '" + hash + "'\n", "users[1]: username: required"},
		"a duplicate username": {entry("") + entry(""), `users[1] (alice): username: "alice" is listed twice`},
		"a bad email":          {entry("  email: Alice <alice@example.com>\n"), "users[0] (alice): email:"},
		"not an email at all":  {entry("  email: alice\n"), "users[0] (alice): email:"},
		"verified, no email":   {entry("  emailVerified: true\n"), "users[0] (alice): emailVerified"},
		"a misspelt field":     {entry("  emailVerfied: true\n"), "emailVerfied"},
		"an empty group":       {entry("  groups: [platform, '']\n"), "users[0] (alice): groups[1]: empty"},
		"groups not a list":    {entry("  groups: platform\n"), "groups"},
		"a colon in the name":  {"- username: 'a:b'\n  passwordHash: '" + hash + "'\n", "users[0] (a:b): username: must not contain a colon"},
	}
	for name, tc := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := tokenserver.LoadUsers(write(t, tc.content))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

// The admin API takes only the response types the server answers (the code flow):
// an implicit or hybrid one is refused naming the field, and discovery says so.
func TestAdminRefusesResponseTypesNotComposed(t *testing.T) {
	in := start(t, setup{})
	for _, rt := range []string{"id_token", "code id_token", "token"} {
		_, err := in.Admin.PutClient(context.Background(), &adminapi.Client{ID: "grafana", OwnerNamespace: "observability",
			Secret: "secret-grafana-0123456789abcdefghijklmnop",
			ClientMetadata: adminapi.ClientMetadata{Name: "Grafana", GrantTypes: []string{"authorization_code"},
				ResponseTypes: []string{rt}, RedirectURIs: []string{redirectURI}, Scopes: []string{"openid"},
				TokenEndpointAuthMethod: "client_secret_basic"}})
		var ae *adminapi.Error
		if !errors.As(err, &ae) || ae.Field != "responseTypes" || !strings.Contains(ae.Message, rt) {
			t.Errorf("PutClient with responseTypes %q: %v; want an error on responseTypes naming it", rt, err)
		}
	}
	var disc struct {
		ResponseTypes []string `json:"response_types_supported"`
	}
	if code := getJSON(t, in.URL+"/.well-known/openid-configuration", &disc); code != http.StatusOK ||
		!slices.Equal(disc.ResponseTypes, []string{"code"}) {
		t.Errorf("discovery response_types_supported %v; want [code]", disc.ResponseTypes)
	}
}
