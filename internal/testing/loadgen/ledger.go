package loadgen

import (
	"slices"
	"sync"
	"time"
)

// Kind names what a request was for.
type Kind string

// The kinds of request the generator makes. The Check* kinds are made by Check
// after the load stopped.
const (
	TokenNew        Kind = "token-new"       // client_credentials on a new connection
	TokenKeepAlive  Kind = "token-keepalive" // client_credentials on a pooled connection
	Refresh         Kind = "refresh"
	Introspect      Kind = "introspect"
	Revoke          Kind = "revoke"
	Reuse           Kind = "reuse"     // a rotated refresh token spent again, which must fail
	Authorize       Kind = "authorize" // GET /oauth2/auth with a signed-in session
	CodeExchange    Kind = "code-exchange"
	Login           Kind = "login"
	GrantCreate     Kind = "grant-create"
	GrantDelete     Kind = "grant-delete"
	CheckIntrospect Kind = "check-introspect"
	CheckUserinfo   Kind = "check-userinfo"
	CheckRefresh    Kind = "check-refresh"
)

// UnknownVersion is the version of a response without the X-Kubeoauth-Version
// header, and of requests that are not HTTP (grants through the Kubernetes API).
const UnknownVersion = "unknown"

// VersionHeader is the response header in which a token server says which build
// answered.
const VersionHeader = "X-Kubeoauth-Version"

// Request is one line of the ledger.
type Request struct {
	Kind       Kind
	Start, End time.Time
	// Err is the transport error (no HTTP response), empty otherwise.
	Err string
	// Status is the HTTP status, 0 with a transport error or for a request that is
	// not HTTP.
	Status int
	// Version is the X-Kubeoauth-Version of the response, UnknownVersion without one.
	Version string
	// Expected says whether the status was the one the ledger expected; a 4xx that
	// was not expected counts as a failure.
	Expected bool
	// Detail is a short description of an unexpected answer (its error code).
	Detail string
}

// token is what the ledger knows of one access or refresh token.
type token struct {
	value   string
	refresh bool
	client  string // ID of the client it was issued to
	chain   int    // index of its refresh chain, -1 when it is in none
	grant   string // key of the grant it was issued under, "" when none
	// revocable tokens are the revoke worker's to revoke; the others are kept and
	// must stay active.
	revocable bool
	// keep: a client_credentials token nothing of the generator's ends; it must
	// introspect active throughout.
	keep bool
	// openid: the access token was granted openid, so /userinfo answers it (200
	// while it is active); /userinfo refuses every other token with 403.
	openid bool

	issuedAt, expiresAt time.Time
	// Facts, zero until established.
	revokedAt      time.Time // a 200 from /oauth2/revoke
	grantDeletedAt time.Time // its grant deleted
	supersededAt   time.Time // its chain was refreshed past it
	// uncertain: a request that would have changed its state got no clear answer
	// (a revocation without a 200), so neither "active" nor "revoked" is expected.
	uncertain bool
}

func (t *token) revoked() bool { return !t.revokedAt.IsZero() || !t.grantDeletedAt.IsZero() }

// ledger is the generator's record: every request, every token and the moments
// marked by the test.
type ledger struct {
	mu       sync.Mutex
	requests []Request
	tokens   []*token
	toRevoke []*token // revocable tokens not yet taken by the revoke worker
	marks    map[string]time.Time
	// inactiveDuringRun counts introspections during the load of tokens the ledger
	// holds to be active that the server called inactive.
	inactiveDuringRun int
	grantsDeleted     int
	dropped           int
}

func newLedger() *ledger { return &ledger{marks: map[string]time.Time{}} }

func (l *ledger) record(r Request) {
	if r.Version == "" {
		r.Version = UnknownVersion
	}
	l.mu.Lock()
	l.requests = append(l.requests, r)
	l.mu.Unlock()
}

func (l *ledger) issued(t *token) {
	l.mu.Lock()
	l.tokens = append(l.tokens, t)
	if t.revocable {
		l.toRevoke = append(l.toRevoke, t)
	}
	l.mu.Unlock()
}

// pick returns a random token that ok accepts, nil when there is none; n is a
// random number from the caller. Newer tokens are likelier picks than with a
// uniform draw, so that a long run keeps exercising fresh ones as well.
func (l *ledger) pick(n int, ok func(*token) bool) *token {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.tokens) == 0 {
		return nil
	}
	start := n % len(l.tokens)
	if n%2 == 0 && len(l.tokens) > 64 {
		start = len(l.tokens) - 1 - n%64
	}
	for i := range l.tokens {
		t := l.tokens[(start+i)%len(l.tokens)]
		if ok(t) {
			return t
		}
	}
	return nil
}

// update runs f on the ledger's tokens under its lock.
func (l *ledger) update(f func()) {
	l.mu.Lock()
	f()
	l.mu.Unlock()
}

func (l *ledger) snapshot() ([]Request, []token, map[string]time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	toks := make([]token, len(l.tokens))
	for i, t := range l.tokens {
		toks[i] = *t
	}
	marks := make(map[string]time.Time, len(l.marks))
	for k, v := range l.marks {
		marks[k] = v
	}
	return slices.Clone(l.requests), toks, marks
}
