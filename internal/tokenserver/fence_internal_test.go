package tokenserver

import (
	"net/http/httptest"
	"testing"
)

// Every GET that writes waits at the fence with the other writes: one answered by
// the guard's 503 instead would lose what it carried (the upstream provider's
// one-time code, a user's sign-out).
func TestFenceHoldsTheGETsThatWrite(t *testing.T) {
	for _, c := range []struct {
		method, target string
		write          bool
	}{
		{"POST", "/oauth2/token", true},
		{"GET", "/oauth2/auth?client_id=a", true},
		{"GET", upstreamCallbackPath + "?code=x&state=y", true},
		{"GET", endSessionPath + "?id_token_hint=x", true},
		{"GET", "/login", false},
		{"GET", "/.well-known/openid-configuration", false},
		{"GET", "/account", false},
		{"HEAD", "/oauth2/jwks", false},
	} {
		if got := isWrite(httptest.NewRequest(c.method, c.target, nil)); got != c.write {
			t.Errorf("isWrite(%s %s) = %v, want %v", c.method, c.target, got, c.write)
		}
	}
}
