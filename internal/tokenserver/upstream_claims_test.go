package tokenserver

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
)

// The provider's claims become the user's identity by the mapping; a value of the
// wrong kind is left out rather than refusing the person.
func TestUpstreamClaimMapping(t *testing.T) {
	tests := map[string]struct {
		mapping    UpstreamClaims
		prefixes   [2]string // usernamePrefix, groupsPrefix
		claims     map[string]any
		want       oauth.Identity
		wantGroups []string // the provider's own, for allowedGroups
	}{
		"standard claims": {claims: map[string]any{"preferred_username": "carol", "name": "Carol Danvers",
			"email": "carol@corp.example", "email_verified": true, "groups": []any{"platform", "oncall"}},
			want: oauth.Identity{Username: "carol", Name: "Carol Danvers", Email: "carol@corp.example", EmailVerified: true,
				Groups: []string{"platform", "oncall"}}, wantGroups: []string{"platform", "oncall"}},
		"prefixes": {prefixes: [2]string{"corp:", "corp:"}, claims: map[string]any{"preferred_username": "admin",
			"groups": []any{"admins"}},
			want: oauth.Identity{Username: "corp:admin", Groups: []string{"corp:admins"}}, wantGroups: []string{"admins"}},
		"no username: the subject here, never the bare sub": {claims: map[string]any{"email": "carol@corp.example"},
			want: oauth.Identity{Username: "upstream:tag:sub-1", Email: "carol@corp.example"}},
		"mapped claims": {mapping: UpstreamClaims{Username: "upn", Groups: "roles", Email: "mail", Name: "displayName"},
			claims: map[string]any{"upn": "carol@corp", "roles": []any{"admin"}, "mail": "c@corp.example", "displayName": "C",
				"preferred_username": "ignored", "groups": []any{"ignored"}},
			want:       oauth.Identity{Username: "carol@corp", Name: "C", Email: "c@corp.example", Groups: []string{"admin"}},
			wantGroups: []string{"admin"}},
		"email from another claim: unverified, whatever email_verified says": {mapping: UpstreamClaims{Email: "mail"},
			claims: map[string]any{"mail": "ceo@corp.example", "email": "me@mail.example", "email_verified": true},
			want:   oauth.Identity{Username: "upstream:tag:sub-1", Email: "ceo@corp.example"}},
		"email_verified as a string, one group as a string": {claims: map[string]any{"email": "d@corp.example",
			"email_verified": "true", "groups": "platform"},
			want:       oauth.Identity{Username: "upstream:tag:sub-1", Email: "d@corp.example", EmailVerified: true, Groups: []string{"platform"}},
			wantGroups: []string{"platform"}},
		"not an address, groups not strings, a group twice": {claims: map[string]any{"email": "Dave <d@corp.example>",
			"email_verified": true, "groups": []any{"a", 7, "", "   ", "a", " b "}},
			want: oauth.Identity{Username: "upstream:tag:sub-1", Groups: []string{"a", "b"}}, wantGroups: []string{"a", "b"}},
		"one group of spaces": {claims: map[string]any{"groups": "   "}, want: oauth.Identity{Username: "upstream:tag:sub-1"}},
		"a username too long": {claims: map[string]any{"preferred_username": strings.Repeat("x", maxUsernameLen+1)},
			want: oauth.Identity{Username: "upstream:tag:sub-1"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			u := newUpstream(UpstreamOIDC{Issuer: "https://sso.example.com", ClientID: "c", Claims: tt.mapping,
				UsernamePrefix: tt.prefixes[0], GroupsPrefix: tt.prefixes[1]})
			got, groups := u.mapClaims("upstream:tag:sub-1", tt.claims, func(string, ...any) {})
			if !reflect.DeepEqual(*got, tt.want) || !reflect.DeepEqual(groups, tt.wantGroups) {
				t.Errorf("got %+v, groups %q; want %+v, %q", *got, groups, tt.want, tt.wantGroups)
			}
		})
	}
}

// The settings file is read strictly, naming what is wrong.
func TestLoadUpstreamOIDC(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		settings, secret, wantErr string
	}{
		"good":             {settings: `{"issuer":"https://sso.example.com","clientID":"c"}`, secret: secret},
		"a misspelt field": {settings: `{"issuer":"https://sso.example.com","clientID":"c","alowedGroups":["x"]}`, secret: secret, wantErr: `unknown field "alowedGroups"`},
		"no issuer":        {settings: `{"clientID":"c"}`, secret: secret, wantErr: "issuer"},
		"no client ID":     {settings: `{"issuer":"https://sso.example.com"}`, secret: secret, wantErr: "clientID: required"},
		"no secret file":   {settings: `{"issuer":"https://sso.example.com","clientID":"c"}`, wantErr: "client secret file is required"},
		"an empty secret":  {settings: `{"issuer":"https://sso.example.com","clientID":"c"}`, secret: empty, wantErr: "the client secret is empty"},
		"allowedGroups an empty list": {settings: `{"issuer":"https://sso.example.com","clientID":"c","allowedGroups":[]}`,
			secret: secret, wantErr: "allowedGroups: an empty list lets nobody in"},
		"allowedEmailDomains an empty list": {settings: `{"issuer":"https://sso.example.com","clientID":"c","allowedEmailDomains":[]}`,
			secret: secret, wantErr: "allowedEmailDomains: an empty list lets nobody in"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "upstream.json")
			if err := os.WriteFile(f, []byte(tt.settings), 0o600); err != nil {
				t.Fatal(err)
			}
			u, err := LoadUpstreamOIDC(f, tt.secret, "")
			if tt.wantErr == "" {
				if err != nil || u.ClientSecret != "s3cret" {
					t.Fatalf("got %+v, %v", u, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}

// A provider behind a private CA is reached with its CA file: the client trusts it
// besides the system's roots; a file with no certificate stops the start.
func TestLoadUpstreamOIDCWithCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer srv.Close()
	dir := t.TempDir()
	files := map[string][]byte{
		"settings": []byte(`{"issuer":"` + srv.URL + `","clientID":"c"}`),
		"secret":   []byte("s3cret"),
		"ca.crt":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
		"bad.crt":  []byte("not a certificate"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	at := func(name string) string { return filepath.Join(dir, name) }
	u, err := LoadUpstreamOIDC(at("settings"), at("secret"), at("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := u.HTTPClient.Get(srv.URL)
	if err != nil {
		t.Fatalf("the provider's certificate is not trusted with its CA file: %v", err)
	}
	_ = resp.Body.Close()
	if resp, err := newUpstream(UpstreamOIDC{Issuer: srv.URL}).hc.Get(srv.URL); err == nil {
		_ = resp.Body.Close()
		t.Error("the provider's certificate is trusted without its CA file")
	}
	if _, err := LoadUpstreamOIDC(at("settings"), at("secret"), at("bad.crt")); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a CA file without a certificate: %v", err)
	}
}
