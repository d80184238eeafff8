package tokenserver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v3"
)

// A provider that ignored the forwarded prompt=login or max_age and let the user
// through on an older sign-in is caught by its own auth_time: the sign-in is
// refused (401, a page saying so). Within the clock skew allowed, the sign-in
// counts as meeting what the app asked, so that fosite's own check passes too.
func TestUpstreamAuthTimeChecked(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	verifier := oidc.NewVerifier("https://sso.example.com", &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{key.Public()}},
		&oidc.Config{ClientID: "c", SupportedSigningAlgs: []string{"ES256"}})
	now := time.Now()
	idToken := func(authTime *time.Time) *oidc.IDToken {
		claims := map[string]any{"iss": "https://sso.example.com", "aud": "c", "sub": "u-1", "exp": now.Add(time.Hour).Unix(),
			"iat": now.Unix()}
		if authTime != nil {
			claims["auth_time"] = authTime.Unix()
		}
		payload, _ := json.Marshal(claims)
		jws, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := jws.CompactSerialize()
		idt, err := verifier.Verify(context.Background(), raw)
		if err != nil {
			t.Fatal(err)
		}
		return idt
	}
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	maxAge := func(n int64) *int64 { return &n }
	started := now.Add(-20 * time.Second).Unix()
	tests := map[string]struct {
		flow     upstreamFlow
		authTime *time.Time
		want     int64 // 0: refused
	}{
		"no prompt, an old sign-in":                   {flow: upstreamFlow{Started: started}, authTime: at(-8 * time.Hour), want: now.Add(-8 * time.Hour).Unix()},
		"prompt=login, a sign-in after the start":     {flow: upstreamFlow{Login: true, Started: started}, authTime: at(-10 * time.Second), want: now.Add(-10 * time.Second).Unix()},
		"prompt=login, the provider's single sign-on": {flow: upstreamFlow{Login: true, Started: started}, authTime: at(-time.Hour)},
		"prompt=login, within the clock skew":         {flow: upstreamFlow{Login: true, Started: started}, authTime: at(-40 * time.Second), want: started},
		"max_age 300, a sign-in of 200 s ago":         {flow: upstreamFlow{MaxAge: maxAge(300), Started: started}, authTime: at(-200 * time.Second), want: now.Add(-200 * time.Second).Unix()},
		"max_age 300, a sign-in of an hour ago":       {flow: upstreamFlow{MaxAge: maxAge(300), Started: started}, authTime: at(-time.Hour)},
		"prompt=login, no auth_time said":             {flow: upstreamFlow{Login: true, Started: started}},
	}
	u := newUpstream(UpstreamOIDC{Issuer: "https://sso.example.com", ClientID: "c", DisplayName: "Corp SSO"})
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := u.checkAuthTime(tt.flow, idToken(tt.authTime), now)
			var refused *upstreamRefusal
			switch {
			case tt.want == 0 && tt.authTime != nil:
				if !errors.As(err, &refused) || refused.code != http.StatusUnauthorized {
					t.Fatalf("got %d, %v; want a 401 refusal", got, err)
				}
			case tt.authTime == nil:
				if err != nil || got != 0 {
					t.Fatalf("got %d, %v; want no auth_time and no refusal", got, err)
				}
			case err != nil || got != tt.want:
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}
