package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Client is an OAuth client the generator authenticates as (client_secret_basic).
type Client struct {
	ID, Secret string
	// Scope requested, space-separated. A client of refresh chains or grants needs
	// offline_access (and openid, for /userinfo).
	Scope string
	// RedirectURI of an authorization-code client; nothing listens there, the
	// generator reads the code from the redirect.
	RedirectURI string
}

// User can sign in on the token server's login page.
type User struct{ Name, Password string }

// Grants creates and deletes consent grants the way the system under test does:
// ConsentGrants through the Kubernetes API (NewConsentGrants) in the end-to-end
// tests, the token server's admin API (AdminGrants) where no operator runs.
type Grants interface {
	// Grant returns once the grant is in force on the token server: an
	// authorization request of subject at client needs no consent.
	Grant(ctx context.Context, clientID, subject string, scopes []string) error
	// Revoke returns once the grant and every token issued under it are revoked.
	Revoke(ctx context.Context, clientID, subject string) error
}

// Mix weighs the kinds of request the rate is spread over.
type Mix struct {
	TokenNew, TokenKeepAlive, Refresh, Introspect, Revoke int
	// Reuse spends a chain's rotated refresh token again, past the grace period:
	// the server must refuse it and revoke the chain, which then starts afresh
	// with a code flow. Skipped while no chain has such a token.
	Reuse int
}

// Config says what to load and how hard.
type Config struct {
	// URLs are the public base URLs (issuers) of the token server; requests are
	// spread over them in turn (two replicas on one database, say). The first one
	// serves the sign-ins.
	URLs []string
	// Machine is a client_credentials client.
	Machine Client
	// Introspector authenticates introspections, as a resource server would; by
	// default Machine. A client of its own lets a check tell a lost token from a
	// client that can no longer authenticate.
	Introspector Client
	// ChainClient is an authorization-code client that the ChainUsers can authorize
	// without a consent page (skipConsent, or a standing grant).
	ChainClient Client
	ChainUsers  []User
	// Chains is how many refresh chains run; each is refreshed over and over.
	Chains int

	// Grants, when set, makes a grant cycle every GrantInterval: a grant for one of
	// the GrantUsers at GrantClient is made, tokens are issued under it by the code
	// flow, and it is deleted, which must revoke them. The GrantUsers must not be
	// able to authorize GrantClient without a grant, and must not be ChainUsers of
	// the same client.
	Grants        Grants
	GrantClient   Client
	GrantUsers    []User
	GrantInterval time.Duration

	// Rate is the requests per second of the mix (grant cycles come on top).
	// Default 60.
	Rate float64
	Mix  Mix
	// Workers run requests at once; a tick that finds them all busy is dropped and
	// counted. Default 8.
	Workers int
	// Timeout of each request. Default 10s.
	Timeout time.Duration
	// RefreshTokenLifespan of the server, to know when a refresh token expires.
	// Default 720h, the token server's default.
	RefreshTokenLifespan time.Duration
	// RefreshGracePeriod of the server: a rotated refresh token is expected
	// inactive only once it has passed (and the second in which identical refreshes
	// are coalesced). Default 0, the token server's default.
	RefreshGracePeriod time.Duration
}

func (c *Config) defaults() error {
	if len(c.URLs) == 0 {
		return errors.New("loadgen: Config.URLs is empty")
	}
	for _, u := range c.URLs {
		if _, err := url.Parse(u); err != nil {
			return fmt.Errorf("loadgen: Config.URLs: %w", err)
		}
	}
	if c.Machine.ID == "" {
		return errors.New("loadgen: Config.Machine.ID is empty")
	}
	if c.Chains > 0 && (c.ChainClient.ID == "" || len(c.ChainUsers) == 0) {
		return errors.New("loadgen: Config.Chains needs ChainClient and ChainUsers")
	}
	if c.Grants != nil && (c.GrantClient.ID == "" || len(c.GrantUsers) == 0) {
		return errors.New("loadgen: Config.Grants needs GrantClient and GrantUsers")
	}
	if c.Introspector.ID == "" {
		c.Introspector = c.Machine
	}
	if c.Rate == 0 {
		c.Rate = 60
	}
	if c.Mix == (Mix{}) {
		c.Mix = Mix{TokenNew: 3, TokenKeepAlive: 3, Refresh: 2, Introspect: 3, Revoke: 1, Reuse: 1}
	}
	if c.Workers == 0 {
		c.Workers = 8
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.GrantInterval == 0 {
		c.GrantInterval = time.Second
	}
	if c.RefreshTokenLifespan == 0 {
		c.RefreshTokenLifespan = 720 * time.Hour
	}
	return nil
}

// chain is one refresh chain: its current head, refreshed by one worker at a time.
type chain struct {
	mu      sync.Mutex
	session *session
	at, rt  *token
	// spent are the refresh tokens the chain was refreshed past, oldest first.
	spent []*token
}

// Generator runs the load and keeps the ledger. New prepares it, Start runs the
// load, Mark notes moments, Stop ends the load and Check verifies the ledger.
type Generator struct {
	cfg     Config
	ledger  *ledger
	clients map[string]Client
	// fresh opens a new connection per request; pooled keeps connections alive,
	// the way most apps call a token server.
	fresh, pooled *http.Client
	chains        []*chain
	grantSessions []*session
	next          atomic.Uint64
	turns         atomic.Uint32
	machineTokens atomic.Uint32

	cancel           context.CancelFunc
	done             sync.WaitGroup
	started, stopped time.Time
}

// New signs the users in and starts the refresh chains (one code flow each), so
// that the load itself only refreshes. Requests made here are in the ledger too.
func New(ctx context.Context, cfg Config) (*Generator, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	g := &Generator{cfg: cfg, ledger: newLedger(), clients: map[string]Client{cfg.Machine.ID: cfg.Machine}}
	g.fresh = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: cfg.Timeout}
	g.pooled = &http.Client{Transport: &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 32}, Timeout: cfg.Timeout}
	if cfg.Chains > 0 {
		g.clients[cfg.ChainClient.ID] = cfg.ChainClient
		var sessions []*session
		for _, u := range cfg.ChainUsers {
			s, err := g.newSession(u, cfg.ChainClient.RedirectURI)
			if err != nil {
				return nil, err
			}
			if err := g.signIn(ctx, s, cfg.ChainClient); err != nil {
				return nil, err
			}
			sessions = append(sessions, s)
		}
		for i := range cfg.Chains {
			at, rt, err := g.codeFlow(ctx, sessions[i%len(sessions)], cfg.ChainClient, i, "")
			if err != nil {
				return nil, fmt.Errorf("refresh chain %d: %w", i, err)
			}
			g.chains = append(g.chains, &chain{session: sessions[i%len(sessions)], at: at, rt: rt})
		}
	}
	if cfg.Grants != nil {
		g.clients[cfg.GrantClient.ID] = cfg.GrantClient
		for _, u := range cfg.GrantUsers {
			s, err := g.newSession(u, cfg.GrantClient.RedirectURI)
			if err != nil {
				return nil, err
			}
			// Signing in needs no grant: the login page comes before consent.
			if err := g.signIn(ctx, s, cfg.GrantClient); err != nil {
				return nil, err
			}
			g.grantSessions = append(g.grantSessions, s)
		}
	}
	return g, nil
}

func newJar() (http.CookieJar, error) { return cookiejar.New(nil) }

// turn spreads picks (of a token, a chain) without a random source: a counter
// that the workers share interleaves well enough, and runs are easier to compare.
func (g *Generator) turn() int { return int(g.turns.Add(1) % (1 << 30)) }

func (g *Generator) nextURL() string {
	return g.cfg.URLs[g.next.Add(1)%uint64(len(g.cfg.URLs))]
}

// Start runs the load in the background until Stop.
func (g *Generator) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.started = cancel, time.Now()
	jobs := make(chan Kind)
	for range g.cfg.Workers {
		g.done.Go(func() {
			for kind := range jobs {
				// Not ctx: Stop lets requests in flight finish, so that stopping is
				// never mistaken for a failed request.
				g.run(context.Background(), kind)
			}
		})
	}
	g.done.Go(func() {
		defer close(jobs)
		schedule := g.schedule()
		lim := rate.NewLimiter(rate.Limit(g.cfg.Rate), 1)
		for i := 0; ; i++ {
			if lim.Wait(ctx) != nil {
				return
			}
			select {
			case jobs <- schedule[i%len(schedule)]:
			default:
				g.ledger.update(func() { g.ledger.dropped++ })
			}
		}
	})
	if g.cfg.Grants != nil {
		g.done.Go(func() { g.grantLoop(ctx) })
	}
}

// schedule spreads the mix's kinds evenly over one round.
func (g *Generator) schedule() []Kind {
	m := g.cfg.Mix
	if len(g.chains) == 0 {
		m.Refresh, m.Reuse = 0, 0
	}
	var s []Kind
	weights := []struct {
		k Kind
		n int
	}{{TokenNew, m.TokenNew}, {TokenKeepAlive, m.TokenKeepAlive}, {Refresh, m.Refresh}, {Introspect, m.Introspect},
		{Revoke, m.Revoke}, {Reuse, m.Reuse}}
	for more := true; more; {
		more = false
		for i := range weights {
			if weights[i].n > 0 {
				s = append(s, weights[i].k)
				weights[i].n--
				more = true
			}
		}
	}
	return s
}

// Mark notes that name happened now, for Report cutovers ("promotion started").
func (g *Generator) Mark(name string) {
	g.ledger.update(func() { g.ledger.marks[name] = time.Now() })
}

// Stop ends the load and waits for the requests in flight.
func (g *Generator) Stop() {
	if g.cancel != nil {
		g.cancel()
	}
	g.done.Wait()
	g.stopped = time.Now()
}

func (g *Generator) run(ctx context.Context, kind Kind) {
	switch kind {
	case TokenNew, TokenKeepAlive:
		hc := g.pooled
		if kind == TokenNew {
			hc = g.fresh
		}
		start := time.Now()
		status, body := g.post(ctx, kind, hc, "/oauth2/token", g.cfg.Machine,
			url.Values{paramGrantType: {"client_credentials"}, "scope": {g.cfg.Machine.Scope}}, expectStatus(http.StatusOK))
		if status == http.StatusOK {
			// Every fourth is the revoke worker's.
			_, _, _ = g.issue(body, start, g.cfg.Machine, -1, "", g.machineTokens.Add(1)%4 == 0)
		}
	case Refresh:
		g.refresh(ctx)
	case Reuse:
		g.reuse(ctx)
	case Introspect:
		t := g.ledger.pick(g.turn(), func(t *token) bool {
			return t.keep && time.Until(t.expiresAt) > 10*time.Second
		})
		if t == nil {
			return
		}
		if active, ok := g.introspect(ctx, Introspect, t); ok && !active {
			g.ledger.update(func() { g.ledger.inactiveDuringRun++ })
		}
	case Revoke:
		var t *token
		g.ledger.update(func() {
			if n := len(g.ledger.toRevoke); n > 0 {
				t, g.ledger.toRevoke = g.ledger.toRevoke[n-1], g.ledger.toRevoke[:n-1]
				// Until the 200 comes, nobody can tell what it will be.
				t.uncertain = true
			}
		})
		if t == nil {
			return
		}
		status, _ := g.post(ctx, Revoke, g.pooled, "/oauth2/revoke", g.clients[t.client], tokenForm(t), expectStatus(http.StatusOK))
		if status == http.StatusOK {
			now := time.Now()
			g.ledger.update(func() { t.revokedAt, t.uncertain = now, false })
		}
	}
}

// refresh refreshes a chain that no other worker holds.
func (g *Generator) refresh(ctx context.Context) {
	n := g.turn() % len(g.chains)
	for i := range g.chains {
		c := g.chains[(n+i)%len(g.chains)]
		if !c.mu.TryLock() {
			continue
		}
		defer c.mu.Unlock()
		start := time.Now()
		status, body := g.post(ctx, Refresh, g.pooled, "/oauth2/token", g.cfg.ChainClient, refreshForm(c.rt), expectStatus(http.StatusOK))
		if status != http.StatusOK {
			// The head stays; a refresh that was done but whose answer was lost leaves
			// it spent, and only the server's grace period saves the chain then.
			return
		}
		at, rt, err := g.issue(body, start, g.cfg.ChainClient, (n+i)%len(g.chains), "", false)
		if err != nil || rt == nil {
			return
		}
		g.ledger.update(func() { c.at.supersededAt, c.rt.supersededAt = start, start })
		c.spent = append(c.spent, c.rt)
		c.at, c.rt = at, rt
		return
	}
}

// grantLoop runs one grant cycle per interval, users in turn.
func (g *Generator) grantLoop(ctx context.Context) {
	tick := time.NewTicker(g.cfg.GrantInterval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		g.grantCycle(context.Background(), g.grantSessions[i%len(g.grantSessions)])
	}
}

// grantCycle makes a grant, gets tokens under it and deletes it. The grant's
// tokens are recorded revoked only when the delete returned without error; a failed
// delete leaves them uncertain.
func (g *Generator) grantCycle(ctx context.Context, s *session) {
	c := g.cfg.GrantClient
	key := c.ID + "/" + s.user.Name + "/" + time.Now().Format(time.RFC3339Nano)
	if err := g.grantCall(ctx, GrantCreate, func(ctx context.Context) error {
		return g.cfg.Grants.Grant(ctx, c.ID, s.user.Name, splitScope(c.Scope))
	}); err != nil {
		return
	}
	_, _, _ = g.codeFlow(ctx, s, c, -1, key)
	err := g.grantCall(ctx, GrantDelete, func(ctx context.Context) error {
		return g.cfg.Grants.Revoke(ctx, c.ID, s.user.Name)
	})
	now := time.Now()
	g.ledger.update(func() {
		for _, t := range g.ledger.tokens {
			if t.grant != key {
				continue
			}
			if err != nil {
				t.uncertain = true
			} else {
				t.grantDeletedAt = now
			}
		}
		if err == nil {
			g.ledger.grantsDeleted++
		}
	})
}

// grantCall runs a Grants call as a ledger request. It is not stopped by the end
// of the load: a grant cycle finishes what it began.
func (g *Generator) grantCall(_ context.Context, kind Kind, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 4*g.cfg.Timeout)
	defer cancel()
	r := Request{Kind: kind, Start: time.Now(), Expected: true}
	err := f(ctx)
	r.End = time.Now()
	if err != nil {
		r.Err, r.Expected = err.Error(), false
	}
	g.ledger.record(r)
	return err
}

func splitScope(s string) []string { return strings.Fields(s) }

// Seen counts the requests recorded so far that match f, so that a test can wait
// for the load to have met a condition (a failure seen, traffic on a version).
func (g *Generator) Seen(f func(Request) bool) int {
	g.ledger.mu.Lock()
	defer g.ledger.mu.Unlock()
	n := 0
	for _, r := range g.ledger.requests {
		if f(r) {
			n++
		}
	}
	return n
}

// reuse spends a rotated refresh token of a chain again. Only one that is past the
// grace period (and the coalescing second), and was rotated at least twice ago so
// that no remembered answer can be replayed for it, is the server's to refuse.
func (g *Generator) reuse(ctx context.Context) {
	n := g.turn() % len(g.chains)
	for i := range g.chains {
		idx := (n + i) % len(g.chains)
		c := g.chains[idx]
		if !c.mu.TryLock() {
			continue
		}
		if len(c.spent) < 2 || time.Since(c.spent[0].supersededAt) <= g.cfg.RefreshGracePeriod+2*time.Second {
			c.mu.Unlock()
			continue
		}
		spent := c.spent[0]
		defer c.mu.Unlock()
		status, _ := g.post(ctx, Reuse, g.pooled, "/oauth2/token", g.cfg.ChainClient, refreshForm(spent), expectStatus(http.StatusBadRequest))
		if status != http.StatusBadRequest {
			// A reuse accepted (already counted as unexpected) or no answer: what
			// the chain is now, nobody knows; it starts afresh all the same.
			g.ledger.update(func() { c.at.uncertain, c.rt.uncertain = true, true })
		} else {
			now := time.Now()
			g.ledger.update(func() { c.at.revokedAt, c.rt.revokedAt = now, now })
		}
		c.spent = nil
		if at, rt, err := g.codeFlow(ctx, c.session, g.cfg.ChainClient, idx, ""); err == nil {
			c.at, c.rt = at, rt
		}
		return
	}
}
