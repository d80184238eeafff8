package tokenserver_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"
	josejwt "github.com/go-jose/go-jose/v3/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

// With a shutdown delay, SIGTERM first makes the replica not ready while it goes on
// serving, so a connection a load balancer still routes here is answered, not reset;
// after the delay it stops accepting.
func TestShutdownDelayServesWhileNotReady(t *testing.T) {
	in := start(t, setup{shutdownDelay: 2 * time.Second})
	secret := confidentialClient(t, in, "grafana")
	cc := clientcredentials.Config{ClientID: "grafana", ClientSecret: secret, TokenURL: in.URL + "/oauth2/token"}
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, httpc)
	const delay = 2 * time.Second
	stopped := time.Now()
	in.stop()
	// The replica turns not ready as soon as it sees SIGTERM; it goes on answering
	// all the while, so every probe gets a response.
	for {
		resp, err := httpc.Get(in.URL + "/readyz")
		if err != nil {
			t.Fatalf("readyz during the shutdown delay: %v", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if time.Since(stopped) > delay {
			t.Fatalf("readyz still %d after the %s shutdown delay, want 503 during it", resp.StatusCode, delay)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := cc.Token(ctx); err != nil {
		t.Errorf("a token on a new connection during the shutdown delay: %v", err)
	}
	select {
	case err := <-in.done:
		if took := time.Since(stopped); took < delay {
			t.Errorf("Serve returned %s after SIGTERM, within its %s shutdown delay", took, delay)
		}
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		in.done <- nil // for the cleanup's Stop
	case <-time.After(delay + 6*time.Second):
		t.Fatal("the server did not exit after its shutdown delay and 5s shutdown timeout")
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(in.URL, "http://"), time.Second); err == nil {
		_ = c.Close()
		t.Error("the server still accepts connections after its shutdown delay")
	}
}

// On SIGTERM (its context ending) the server stops accepting, lets the request in
// flight finish, and exits.
func TestGracefulShutdown(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	conn, err := net.Dial("tcp", strings.TrimPrefix(in.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/token", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("grafana", secret)
	req.ContentLength = int64(len(body))
	var head strings.Builder
	if err := req.Write(&head); err != nil {
		t.Fatal(err)
	}
	raw := head.String()
	// Send all but the last bytes of the body: the request is now in flight.
	if _, err := conn.Write([]byte(raw[:len(raw)-5])); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	in.stop()
	time.Sleep(300 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(in.URL, "http://"), time.Second); err == nil {
		_ = c.Close()
		t.Error("the server still accepts connections after SIGTERM")
	}
	if _, err := conn.Write([]byte(raw[len(raw)-5:])); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("the in-flight request got no response: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("in-flight request answered %d, want 200", resp.StatusCode)
	}
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		in.done <- nil // for the cleanup's Stop
	case <-time.After(6 * time.Second):
		t.Error("the server did not exit within its 5s shutdown timeout")
	}
}

// Under steady issuance of short-lived tokens, the janitor keeps the table bounded: it
// deletes expired rows while tokens are issued, and each pass drains every row expired
// by then, so once issuance stops the table empties. (An earlier version compared the
// table's peak with the issuance rate over wall-clock seconds, which a loaded machine
// skews: it failed under load with the janitor working as it should.)
func TestJanitorBoundsTheTable(t *testing.T) {
	dsn := pg.NewMigratedDatabase(t)
	in := start(t, setup{dsn: dsn, accessTTL: time.Second, janitor: 200 * time.Millisecond})
	secret := confidentialClient(t, in, "grafana")
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	count := func() int {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM tokens`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	_, first := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret)
	issued := 1
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if code, _ := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret); code == 200 {
			issued++
		}
	}
	if issued < 100 {
		t.Fatalf("only %d tokens issued; the test proves nothing", issued)
	}
	// Tokens live a second: those of the first two seconds had expired, and the
	// janitor (five passes a second) had deleted them while issuance went on.
	if n := count(); n >= issued {
		t.Errorf("issued %d tokens over 3s and the table holds %d: the janitor deleted none while they were issued", issued, n)
	}
	// The token issued first has expired.
	if got := introspect(t, in, first["access_token"].(string), "grafana", secret); got["active"] != false {
		t.Errorf("a token past its one-second lifespan is still active: %v", got)
	}
	// Once the last token has expired, the next pass leaves nothing.
	deadline := time.Now().Add(30 * time.Second)
	for n := count(); n > 0; n = count() {
		if time.Now().After(deadline) {
			t.Fatalf("%d expired rows left 30s after the last token expired", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// private_key_jwt (RFC 7523 client authentication) with the client's public key in
// jwks, and replay of the same assertion refused.
func TestPrivateKeyJWT(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := jose.JSONWebKey{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}
	pubJSON, _ := pub.MarshalJSON()
	if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: "robot", OwnerNamespace: "ci", ClientMetadata: adminapi.ClientMetadata{
		Name: "Robot", GrantTypes: []string{"client_credentials"}, Scopes: []string{"zones.read"},
		TokenEndpointAuthMethod: "private_key_jwt", JWKS: json.RawMessage(`{"keys": [` + string(pubJSON) + `]}`)}}); err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	assertion, err := josejwt.Signed(signer).Claims(josejwt.Claims{Issuer: "robot", Subject: "robot",
		Audience: josejwt.Audience{in.URL + "/oauth2/token"}, ID: fmt.Sprintf("jti-%d", time.Now().UnixNano()),
		Expiry: josejwt.NewNumericDate(time.Now().Add(time.Minute)), IssuedAt: josejwt.NewNumericDate(time.Now())}).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"robot"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}}
	if code, body := postForm(t, in.URL+"/oauth2/token", form, "", ""); code != 200 || body["access_token"] == nil {
		t.Fatalf("private_key_jwt: %d %v", code, body)
	}
	if code, body := postForm(t, in.URL+"/oauth2/token", form, "", ""); code != 400 || body["error"] != "jti_known" {
		t.Errorf("the same assertion again: %d %v; want it refused as a replay (jti_known)", code, body)
	}
}

// A public client (tokenEndpointAuthMethod none) must use PKCE.
func TestPublicClientNeedsPKCE(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: "cli", OwnerNamespace: "tools", ClientMetadata: adminapi.ClientMetadata{
		Name: "CLI", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{redirectURI}, Scopes: []string{"openid"},
		TokenEndpointAuthMethod: "none"}}); err != nil {
		t.Fatal(err)
	}
	cfg := &oauth2.Config{ClientID: "cli", RedirectURL: redirectURI, Scopes: []string{"openid"},
		Endpoint: oauth2.Endpoint{AuthURL: in.URL + "/oauth2/auth", TokenURL: in.URL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams}}
	b := newBrowser(t)
	resp, _ := b.get(cfg.AuthCodeURL("state-no-pkce-01"))
	loc, _ := resp.Location()
	if !strings.HasPrefix(loc.String(), redirectURI) || loc.Query().Get("error") != "invalid_request" {
		t.Errorf("public client without PKCE: %d %v; want an invalid_request redirect", resp.StatusCode, loc)
	}
	v := oauth2.GenerateVerifier()
	cb := b.authorize(in, cfg.AuthCodeURL("state-pkce-00001", oauth2.S256ChallengeOption(v)), "approve")
	if _, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(v)); err != nil {
		t.Errorf("public client with PKCE: %v", err)
	}
}

// A TokenServer that asks for RS256 but got an EC key refuses to start, saying why.
func TestSigningAlgorithmMustMatchTheKey(t *testing.T) {
	keys := secrets(t) // an ES256 key
	pub, _ := net.Listen("tcp", "127.0.0.1:0")
	adm, _ := net.Listen("tcp", "127.0.0.1:0")
	defer func() { _ = pub.Close(); _ = adm.Close() }()
	err := tokenserver.Serve(context.Background(), tokenserver.Options{
		DSN: pg.NewMigratedDatabase(t), Issuer: "http://" + pub.Addr().String(), PublicListener: pub, AdminListener: adm,
		AdminToken: adminToken, SigningKeyFile: filepath.Join(keys, "key.pem"), SigningAlgorithm: "RS256",
		HMACSecret: []byte("hmac-secret-shared-by-replicas-0123456789"), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err == nil || !strings.Contains(err.Error(), "RS256 was asked for") || !strings.Contains(err.Error(), "ES256 key") {
		t.Fatalf("Serve with RS256 asked and an EC key: %v", err)
	}
}
