package tokenserver

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/netguard"
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
		"plain http elsewhere than loopback": {settings: `{"issuer":"http://sso.example.com","clientID":"c"}`, secret: secret,
			wantErr: "must use https; plain http is allowed only for localhost"},
		"plain http on loopback": {settings: `{"issuer":"http://127.0.0.1:5556","clientID":"c"}`, secret: secret},
		"no client ID":           {settings: `{"issuer":"https://sso.example.com"}`, secret: secret, wantErr: "clientID: required"},
		"no secret file":         {settings: `{"issuer":"https://sso.example.com","clientID":"c"}`, wantErr: "client secret file is required"},
		"an empty secret":        {settings: `{"issuer":"https://sso.example.com","clientID":"c"}`, secret: empty, wantErr: "the client secret is empty"},
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
	u.FetchAllow = loopback
	resp, err := newUpstream(*u).hc.Get(srv.URL)
	if err != nil {
		t.Fatalf("the provider's certificate is not trusted with its CA file: %v", err)
	}
	_ = resp.Body.Close()
	if resp, err := newUpstream(UpstreamOIDC{Issuer: srv.URL, FetchAllow: loopback}).hc.Get(srv.URL); err == nil {
		_ = resp.Body.Close()
		t.Error("the provider's certificate is trusted without its CA file")
	}
	if _, err := LoadUpstreamOIDC(at("settings"), at("secret"), at("bad.crt")); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a CA file without a certificate: %v", err)
	}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// The provider and every URL its discovery document names are reached like
// clients' jwks_uri: internal addresses only when allowed; answers bounded in size;
// an answer's body never carried into the error (which is logged), so a hostile
// discovery document cannot have an internal service's answer read back from the
// log; and an https issuer's endpoints must be https.
func TestUpstreamFetchGuarded(t *testing.T) {
	const secret = "AKIA-INTERNAL-METADATA-SECRET"
	mux := http.NewServeMux()
	mux.HandleFunc("/failing/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, secret, http.StatusInternalServerError)
	})
	mux.HandleFunc("/huge/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"x":"` + strings.Repeat("a", 2<<20) + `"}`))
	})
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	mux.HandleFunc("/plain/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":%q,"token_endpoint":%q,"jwks_uri":%q}`,
			srv.URL+"/plain", srv.URL+"/auth", "http://169.254.169.254/token", srv.URL+"/keys")
	})
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	discover := func(path string, allow []netip.Prefix) error {
		_, err := newUpstream(UpstreamOIDC{Issuer: srv.URL + path, ClientID: "c", RootCAs: roots, FetchAllow: allow}).
			discover(context.Background())
		return err
	}
	if err := discover("/failing", nil); !errors.Is(err, netguard.ErrRefused) {
		t.Errorf("a provider on loopback, not allowed: %v; want the address refused", err)
	}
	if err := discover("/failing", loopback); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("a failed discovery: %v; want an error without the answer's body", err)
	}
	if err := discover("/huge", loopback); err == nil || !strings.Contains(err.Error(), "over 1048576 bytes") {
		t.Errorf("a discovery document of 2 MiB: %v", err)
	}
	if err := discover("/plain", loopback); err == nil || !strings.Contains(err.Error(), `token_endpoint "http://169.254.169.254/token" is not an https URL`) {
		t.Errorf("an https issuer with a plain-http token endpoint: %v", err)
	}
}

// A provider that hangs holds up only the sign-in waiting for it: another sign-in
// gives up when its own request does, rather than queueing behind the first for
// up to 10 seconds each.
func TestUpstreamDiscoveryDoesNotQueue(t *testing.T) {
	arrived, release := make(chan struct{}, 2), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	defer close(release)
	u := newUpstream(UpstreamOIDC{Issuer: srv.URL, ClientID: "c", FetchAllow: loopback})
	first := make(chan error, 1)
	go func() { _, err := u.discover(context.Background()); first <- err }()
	<-arrived // the first discovery is waiting on the provider

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := u.discover(ctx); err == nil {
		t.Fatal("a discovery of a hanging provider succeeded")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the second sign-in waited %s for the first one's discovery; want its own 300ms", took)
	}
	release <- struct{}{}
	if err := <-first; err == nil {
		t.Error("the first discovery of a provider answering 503 succeeded")
	}
}

// The discovery document is read again once it is old, so that a provider's moved
// endpoints need no restart; while that fails, the last good document serves.
func TestUpstreamRediscovery(t *testing.T) {
	var mu sync.Mutex
	token, down := "/token-1", false
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":%q,"token_endpoint":%q,"jwks_uri":%q}`,
			srv.URL, srv.URL+"/auth", srv.URL+token, srv.URL+"/keys")
	}))
	defer srv.Close()
	set := func(t string, d bool) { mu.Lock(); token, down = t, d; mu.Unlock() }
	u := newUpstream(UpstreamOIDC{Issuer: srv.URL, ClientID: "c", FetchAllow: loopback})
	tokenURL := func() string {
		t.Helper()
		p, err := u.discover(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return p.Endpoint().TokenURL
	}
	if got := tokenURL(); got != srv.URL+"/token-1" {
		t.Fatalf("token endpoint %s", got)
	}
	set("/token-2", false)
	if got := tokenURL(); got != srv.URL+"/token-1" {
		t.Errorf("a fresh document was read again: %s", got)
	}
	u.rediscoverAfter = 0 // the document is now old
	if got := tokenURL(); got != srv.URL+"/token-2" {
		t.Errorf("an old document was not read again: %s", got)
	}
	set("/token-3", true)
	if got := tokenURL(); got != srv.URL+"/token-2" {
		t.Errorf("with the provider down, the last good document: %s", got)
	}
}
