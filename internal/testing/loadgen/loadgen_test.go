package loadgen_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/randsecret"
	"github.com/kubeoauth/kubeoauth/internal/testing/devserver"
	"github.com/kubeoauth/kubeoauth/internal/testing/loadgen"
)

// One database and one token-server binary for the package; every test registers
// clients of its own, so that what one test breaks is not another's.
var (
	env *devserver.Env
	bin string
)

var users = map[string]string{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	ctx := context.Background()
	var err error
	env, err = devserver.Start(ctx, devserver.Options{Users: users, PasswordCost: bcrypt.MinCost})
	defer func() { _ = env.Stop() }()
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "loadgen-bin-")
	if err != nil {
		return 0, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	bin = filepath.Join(dir, "tokenserver")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/kubeoauth/kubeoauth/cmd/tokenserver").CombinedOutput() // #nosec G204
	if err != nil {
		return 0, fmt.Errorf("go build cmd/tokenserver: %w\n%s", err, out)
	}
	return m.Run(), nil
}

// grace is the servers' refresh grace period: long enough that a chain survives a
// refresh whose answer was lost (a killed server), as in production, short enough
// that the check sees rotated refresh tokens end.
const grace = time.Second

// replica is one token-server process on the package's database.
type replica struct {
	URL, pub, adm string
	extra         []string
	cmd           *exec.Cmd
	Admin         *adminapi.HTTPClient
}

// serve starts a token server on fresh addresses.
func serve(t *testing.T, extra ...string) *replica {
	t.Helper()
	addrs, err := devserver.FreeAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{pub: addrs[0], adm: addrs[1], URL: "http://" + addrs[0],
		extra: append([]string{"--refresh-grace-period", grace.String()}, extra...)}
	r.start(t)
	return r
}

func (r *replica) start(t *testing.T) {
	t.Helper()
	cmd, admin, err := env.Serve(t.Context(), bin, r.pub, r.adm, r.extra...)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd, r.Admin = cmd, admin
	t.Cleanup(func() { _ = cmd.Process.Kill() })
}

// clients registers a machine client, an introspector, a first-party client for
// chains and a consent-needing client for grants, all new, and returns a Config
// that uses them.
func clients(t *testing.T, admin *adminapi.HTTPClient, urls ...string) loadgen.Config {
	t.Helper()
	id := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	redirect := "http://127.0.0.1:9/callback"
	put := func(name string, grants []string, scopes []string, skip bool) loadgen.Client {
		c := &adminapi.Client{ID: id + "-" + name, Secret: randsecret.MustNew(32), OwnerNamespace: "loadgen",
			ClientMetadata: adminapi.ClientMetadata{Name: name, GrantTypes: grants, RedirectURIs: []string{redirect},
				Scopes: scopes, TokenEndpointAuthMethod: "client_secret_basic", SkipConsent: skip}}
		if _, err := admin.PutClient(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		return loadgen.Client{ID: c.ID, Secret: c.Secret, Scope: strings.Join(scopes, " "), RedirectURI: redirect}
	}
	code := []string{"authorization_code", "refresh_token"}
	user := []string{"openid", "offline_access"}
	return loadgen.Config{
		URLs: urls,
		// openid, so that /userinfo checks the revoked machine tokens too.
		Machine:      put("machine", []string{"client_credentials"}, []string{"openid", "zones.read"}, false),
		Introspector: put("introspector", []string{"client_credentials"}, []string{"zones.read"}, false),
		ChainClient:  put("web", code, user, true),
		ChainUsers:   []loadgen.User{{Name: "alice", Password: users["alice"]}},
		Chains:       4,
		Grants:       loadgen.AdminGrants{Admin: admin},
		GrantClient:  put("partner", code, user, false),
		GrantUsers:   []loadgen.User{{Name: "bob", Password: users["bob"]}, {Name: "carol", Password: users["carol"]}},
		// Fast enough that a short test sees several cycles.
		GrantInterval:      300 * time.Millisecond,
		Rate:               80,
		RefreshGracePeriod: grace,
	}
}

// run starts a generator, calls during (if any) halfway and stops after d.
func run(t *testing.T, cfg loadgen.Config, d time.Duration, during func(g *loadgen.Generator)) *loadgen.Report {
	t.Helper()
	g, err := loadgen.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	<-time.After(d / 2)
	if during != nil {
		g.Mark("fault")
		during(g)
	}
	<-time.After(d / 2)
	g.Stop()
	rep, err := g.Check(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	return rep
}

// waitCount waits until the generator has recorded n requests that f accepts.
func waitCount(t *testing.T, g *loadgen.Generator, n int, f func(loadgen.Request) bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for g.Seen(f) < n {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%d of %d requests seen", g.Seen(f), n)
		}
	}
}

// waitSeen waits until the generator has recorded a request of each kind that f
// accepts.
func waitSeen(t *testing.T, g *loadgen.Generator, f func(loadgen.Request) bool, kinds ...loadgen.Kind) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for _, k := range kinds {
		for g.Seen(func(r loadgen.Request) bool { return r.Kind == k && f(r) }) == 0 {
			select {
			case <-tick.C:
			case <-deadline:
				t.Fatalf("no %s request seen", k)
			}
		}
	}
}

// Two replicas on one database take requests in turn, so a token revoked on one is
// checked on the other: a healthy server gives all zeros, with every kind of work
// done.
func TestHealthyServersGiveZeroFigures(t *testing.T) {
	a, b := serve(t), serve(t)
	rep := run(t, clients(t, a.Admin, a.URL, b.URL), 4*time.Second, nil)
	if f := rep.Failures(); len(f) > 0 {
		t.Fatalf("a healthy server failed the ledger: %v", f)
	}
	for kind, min := range map[loadgen.Kind]int{loadgen.TokenNew: 20, loadgen.TokenKeepAlive: 20, loadgen.Refresh: 10,
		loadgen.Introspect: 20, loadgen.Revoke: 5, loadgen.Authorize: 3, loadgen.GrantCreate: 3, loadgen.GrantDelete: 3,
		loadgen.CheckIntrospect: 50, loadgen.CheckUserinfo: 5, loadgen.CheckRefresh: 4} {
		if k := rep.Kinds[kind]; k == nil || k.OK < min {
			t.Errorf("%s: %+v, want at least %d ok", kind, k, min)
		}
	}
	if rep.TokensRevoked < 10 || rep.GrantsDeleted < 3 || rep.ChainRefreshes < 10 || rep.ChainsChecked != 4 {
		t.Errorf("too little was proven: %d revoked, %d grants deleted, %d refreshes, %d chains checked",
			rep.TokensRevoked, rep.GrantsDeleted, rep.ChainRefreshes, rep.ChainsChecked)
	}
}

// Clients deleted behind the generator's back end their tokens and chains: the
// check finds them lost and broken.
func TestDeletedClientsShowAsLostTokensAndBrokenChains(t *testing.T) {
	s := serve(t)
	cfg := clients(t, s.Admin, s.URL)
	cfg.Grants = nil
	rep := run(t, cfg, 3*time.Second, func(*loadgen.Generator) {
		for _, id := range []string{cfg.Machine.ID, cfg.ChainClient.ID} {
			if err := s.Admin.DeleteClient(t.Context(), id, ""); err != nil {
				t.Error(err)
			}
		}
	})
	if rep.LostTokens == 0 || rep.BrokenChains != cfg.Chains || rep.Unexpected == 0 {
		t.Fatalf("lost tokens %d, broken chains %d of %d, unexpected %d: the ledger missed the deleted clients",
			rep.LostTokens, rep.BrokenChains, cfg.Chains, rep.Unexpected)
	}
}

// A server killed and started again while keep-alive connections are open: the
// requests that fail are counted, and no stored token is lost by the restart.
func TestKilledServerShowsAsTransportErrors(t *testing.T) {
	s := serve(t)
	cfg := clients(t, s.Admin, s.URL)
	rep := run(t, cfg, 4*time.Second, func(g *loadgen.Generator) {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		// Down until both kinds of connection have met the dead server.
		failed := func(r loadgen.Request) bool { return r.Err != "" }
		waitSeen(t, g, failed, loadgen.TokenKeepAlive, loadgen.TokenNew)
		s.start(t)
	})
	if rep.TransportErrors == 0 {
		t.Fatal("no transport errors counted across a killed server")
	}
	if k := rep.Kinds[loadgen.TokenKeepAlive]; k == nil || k.TransportErrors == 0 {
		t.Errorf("keep-alive requests: %+v, want transport errors", k)
	}
	if rep.LostTokens != 0 || rep.RevocationsLost != 0 {
		t.Errorf("a restart lost %d tokens and %d revocations", rep.LostTokens, rep.RevocationsLost)
	}
}

// proxy puts a reverse proxy in front of the server whose answers fault may
// replace (true: handled, not forwarded).
func proxy(t *testing.T, target string, fault func(w http.ResponseWriter, r *http.Request) bool) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fault(w, r) {
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// A server that answers 500 to one request in ten: every one is counted.
func TestServerErrorsAreCounted(t *testing.T) {
	s := serve(t)
	var n, injected atomic.Int64
	front := proxy(t, s.URL, func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/oauth2/token") || n.Add(1)%10 != 0 {
			return false
		}
		injected.Add(1)
		http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
		return true
	})
	cfg := clients(t, s.Admin, front)
	cfg.Grants = nil
	rep := run(t, cfg, 3*time.Second, nil)
	// Injected 500s after the load stopped are the check's chain refreshes.
	if int64(rep.ServerErrors) != injected.Load() || rep.ServerErrors == 0 {
		t.Fatalf("5xx counted %d, injected %d", rep.ServerErrors, injected.Load())
	}
}

// A revocation answered 200 but never done (a proxy that swallows it) is a lost
// revocation, found at introspection and at /userinfo.
func TestSwallowedRevocationsAreLost(t *testing.T) {
	s := serve(t)
	front := proxy(t, s.URL, func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/oauth2/revoke" {
			return false
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
		return true
	})
	cfg := clients(t, s.Admin, front)
	cfg.Grants = nil
	rep := run(t, cfg, 3*time.Second, nil)
	// Chains revoked by reuse detection went through: those are not lost.
	swallowed := rep.Kinds[loadgen.Revoke].OK
	if rep.RevocationsLost == 0 || rep.RevocationsLost != swallowed {
		t.Fatalf("revocations lost %d of %d swallowed", rep.RevocationsLost, swallowed)
	}
	if k := rep.Kinds[loadgen.CheckUserinfo]; k == nil || k.OK < swallowed {
		t.Errorf("userinfo checks %+v, want one per swallowed revocation", k)
	}
}

// A promotion seen from outside: two replicas stand for blue and green behind one
// address, each answer says which served it, and the traffic moves at a marked
// moment. The report says when everything was on green.
func TestCutoverIsMeasuredFromTheVersionHeader(t *testing.T) {
	blue, green := serve(t), serve(t)
	var promoted atomic.Bool
	front := proxyTo(t, func() (string, string) {
		if promoted.Load() {
			return green.URL, "green"
		}
		return blue.URL, "blue"
	})
	cfg := clients(t, blue.Admin, front)
	cfg.Grants = nil
	g, err := loadgen.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	onBlue := func(r loadgen.Request) bool { return r.Version == "blue" }
	waitSeen(t, g, onBlue, loadgen.TokenKeepAlive, loadgen.Refresh, loadgen.Revoke)
	g.Mark("promotion started")
	promoted.Store(true)
	onGreen := func(r loadgen.Request) bool { return r.Version == "green" }
	waitSeen(t, g, onGreen, loadgen.TokenKeepAlive, loadgen.Refresh, loadgen.Revoke, loadgen.Introspect)
	g.Stop()
	rep, err := g.Check(t.Context(), loadgen.Cutover{Mark: "promotion started", Version: "green"},
		loadgen.Cutover{Mark: "promotion started", Version: "purple"}, loadgen.Cutover{Mark: "never", Version: "green"})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	if f := rep.Failures(); len(f) > 0 {
		t.Fatalf("a promotion between replicas of one database failed the ledger: %v", f)
	}
	if c := rep.Cutovers[0]; !c.Reached || c.After > cfg.Timeout {
		t.Errorf("cutover to green: %+v", c)
	}
	if c := rep.Cutovers[1]; c.Reached {
		t.Errorf("cutover to a version that never served: %+v", c)
	}
	if c := rep.Cutovers[2]; c.Err == "" {
		t.Errorf("cutover from an unknown mark: %+v", c)
	}
	if rep.Versions["blue"] == 0 || rep.Versions["green"] == 0 || rep.Versions[loadgen.UnknownVersion] != 0 {
		t.Errorf("versions: %v", rep.Versions)
	}
}

// proxyTo forwards each request to the URL route gives, and says in the version
// header which one it was.
func proxyTo(t *testing.T, route func() (target, version string)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target, version := route()
		u, err := url.Parse(target)
		if err != nil {
			t.Error(err)
			return
		}
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.ModifyResponse = func(resp *http.Response) error {
			resp.Header.Set(loadgen.VersionHeader, version)
			return nil
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// A server that answers refreshes without rotating anything (a fabricated
// answer): the tokens it replaced are still active, the ones it gave are not, and
// the chains are gone.
func TestFakeRotationsAreCaught(t *testing.T) {
	s := serve(t)
	var fake atomic.Bool
	front := proxy(t, s.URL, func(w http.ResponseWriter, r *http.Request) bool {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		if !fake.Load() || r.URL.Path != "/oauth2/token" || form.Get("grant_type") != "refresh_token" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"access_token":"ory_at_%s","refresh_token":"ory_rt_%s","expires_in":3600,"token_type":"bearer"}`,
			randsecret.MustNew(32), randsecret.MustNew(32))
		return true
	})
	cfg := clients(t, s.Admin, front)
	cfg.Grants = nil
	g, err := loadgen.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	fake.Store(true)
	g.Start()
	waitSeen(t, g, func(r loadgen.Request) bool { return r.Status == http.StatusOK }, loadgen.Refresh)
	g.Stop()
	// The check's refreshes reach the server.
	fake.Store(false)
	rep, err := g.Check(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	// Each faked refresh leaves its chain's old access token active, its new
	// tokens unknown to the server and the chain without a usable head.
	if rep.SupersededActive == 0 || rep.LostTokens == 0 || rep.BrokenChains == 0 {
		t.Fatalf("superseded active %d, lost tokens %d, broken chains %d: the ledger missed the fake rotations",
			rep.SupersededActive, rep.LostTokens, rep.BrokenChains)
	}
}

// Behind a Service, a keep-alive connection stays on the pod it was opened to: a
// promotion that only routes new connections leaves the keep-alive clients on
// blue, and the cutover is not reached until blue closes them (issue 13 item 6:
// "Connection: close" once it is not ready).
func TestStrandedKeepAliveConnectionsDelayTheCutover(t *testing.T) {
	blue, green := serve(t), serve(t)
	var promoted, blueClosing atomic.Bool
	var mu sync.Mutex
	pinned := map[string]string{} // client address → version
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		version, ok := pinned[r.RemoteAddr]
		if !ok {
			version = "blue"
			if promoted.Load() {
				version = "green"
			}
			pinned[r.RemoteAddr] = version
		}
		mu.Unlock()
		target := blue.URL
		if version == "green" {
			target = green.URL
		} else if blueClosing.Load() {
			w.Header().Set("Connection", "close")
		}
		u, _ := url.Parse(target)
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.ModifyResponse = func(resp *http.Response) error {
			resp.Header.Set(loadgen.VersionHeader, version)
			return nil
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg := clients(t, blue.Admin, srv.URL)
	cfg.Grants = nil
	g, err := loadgen.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	waitSeen(t, g, func(r loadgen.Request) bool { return r.Version == "blue" }, loadgen.TokenKeepAlive)
	g.Mark("promotion started")
	promoted.Store(true)
	promotedAt := time.Now()
	// New connections go to green at once, kept-alive ones stay on blue.
	waitSeen(t, g, func(r loadgen.Request) bool { return r.Version == "green" }, loadgen.TokenNew)
	waitSeen(t, g, func(r loadgen.Request) bool { return r.Version == "blue" && r.Start.After(promotedAt) }, loadgen.TokenKeepAlive)
	g.Mark("blue closing")
	blueClosing.Store(true)
	closingAt := time.Now()
	waitSeen(t, g, func(r loadgen.Request) bool { return r.Version == "green" && r.Start.After(closingAt) },
		loadgen.TokenKeepAlive, loadgen.Introspect, loadgen.Refresh, loadgen.Revoke)
	g.Stop()
	rep, err := g.Check(t.Context(), loadgen.Cutover{Mark: "promotion started", Version: "green"},
		loadgen.Cutover{Mark: "blue closing", Version: "green"})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	if f := rep.Failures(); len(f) > 0 {
		t.Fatalf("closing kept-alive connections failed requests: %v", f)
	}
	fromPromotion, fromClosing := rep.Cutovers[0], rep.Cutovers[1]
	if !fromClosing.Reached || fromPromotion.After < closingAt.Sub(promotedAt) {
		t.Errorf("cutover %+v from promotion, %+v from closing; blue closed its connections %s after promotion",
			fromPromotion, fromClosing, closingAt.Sub(promotedAt))
	}
}

// A server whose grace period is longer than the ledger believes accepts spent
// refresh tokens where they must be refused: the reuses count as unexpected
// answers, and the chains' fate as unknown rather than revoked.
func TestAcceptedReuseIsUnexpected(t *testing.T) {
	s := serve(t, "--refresh-grace-period", "5m")
	cfg := clients(t, s.Admin, s.URL)
	cfg.Grants = nil
	g, err := loadgen.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	waitSeen(t, g, func(r loadgen.Request) bool { return r.Status == http.StatusOK }, loadgen.Reuse)
	g.Stop()
	rep, err := g.Check(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	if k := rep.Kinds[loadgen.Reuse]; k == nil || k.Unexpected == 0 || rep.Unexpected != k.Unexpected {
		t.Fatalf("reuse %+v, unexpected %d: the accepted reuses are not what was counted", k, rep.Unexpected)
	}
}
