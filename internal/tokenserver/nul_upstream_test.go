package tokenserver_test

import (
	"net/http"
	"slices"
	"testing"

	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/testing/oidcop"
)

// Found by review 19: what a person puts in their profile at the upstream provider (display
// name, username, group names: editable by the user at many providers, or by a
// tenant admin of a multi-tenant one) becomes their identity here, kept with the
// sign-in session (jsonb) and as the subject (text). A NUL byte in any of them makes
// the sign-in a 500 after the provider signed them in. The mapping already leaves
// out values of the wrong kind rather than refusing the person
// (TestUpstreamClaimMapping); a name PostgreSQL cannot hold is one, or the sign-in
// is refused on a page that says why (4xx), as for a username too long.
func TestUpstreamClaimWithNUL(t *testing.T) {
	op := startOP(t)
	in := start(t, setup{upstream: upstreamSettings(op.Issuer), noUsers: true})
	users := append(slices.Clone(opUsers),
		oidcop.User{ID: "u-eve", Username: "eve", Password: opPassword, FirstName: "Eve\x00", LastName: "Null",
			Email: "eve@corp.example", EmailVerified: true, Groups: []string{"platform"}},
		oidcop.User{ID: "u-erin", Username: "erin\x00", Password: opPassword, FirstName: "Erin", LastName: "Null",
			Email: "erin@corp.example", EmailVerified: true, Groups: []string{"platform"}},
		oidcop.User{ID: "u-finn", Username: "finn", Password: opPassword, FirstName: "Finn", LastName: "Null",
			Email: "finn@corp.example", EmailVerified: true, Groups: []string{"plat\x00form"}})
	h := oidcop.New(op.Issuer, users, []oidcop.Client{{ID: upstreamClientID, Secret: upstreamClientSecret,
		RedirectURIs: []string{in.URL + "/login/upstream/callback"}}}, nil)
	op.handler.Store(&h)
	cfg, _ := openidOnlyClient(t, in, "wiki", "openid", "profile", "groups")
	cfg.Scopes = []string{"openid", "profile", "groups"}
	for what, user := range map[string]string{"a name": "eve", "a username": "erin\x00", "a group": "finn"} {
		b := newBrowser(t)
		_, page := b.get(cfg.AuthCodeURL("state-upstream-19", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		resp, page := b.upstreamLogin(in, op, page, user)
		if resp.StatusCode >= http.StatusInternalServerError {
			t.Errorf("a provider user with a NUL in %s: %d %.300s; want signed in (the value left out) or refused with a 4xx page",
				what, resp.StatusCode, page)
		}
	}
}
