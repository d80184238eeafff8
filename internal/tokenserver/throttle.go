package tokenserver

import (
	"crypto/sha256"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// LoginThrottle limits failed sign-ins: each username and each client address may
// fail Burst times in a row, then earns one more attempt every Refill. While a key is
// out of attempts every sign-in with it is refused before any password is checked —
// the right password too, or guessing would simply go on.
type LoginThrottle struct {
	PerUser, PerIP int
	Refill         time.Duration
}

// DefaultLoginThrottle: 5 failures per username and 20 per address, then one
// attempt a minute.
var DefaultLoginThrottle = LoginThrottle{PerUser: 5, PerIP: 20, Refill: time.Minute}

const (
	// maxThrottleKeys bounds each of the two limiter maps (usernames, addresses).
	// Keys are fixed-size (a username's SHA-256, an address prefix), so the bound is
	// one of memory too: a few MB whatever the requests hold.
	maxThrottleKeys = 10000
	// maxUsernameLen: longer usernames are refused before the throttle sees them.
	// No users file needs more, and the page, the log and the limiters stay small.
	maxUsernameLen = 256
	// ipv6ThrottleBits: an IPv6 client is throttled by its /64, the smallest block
	// a site is handed; one host can pick any address in it.
	ipv6ThrottleBits = 64
)

type throttle struct {
	cfg     LoginThrottle
	maxKeys int
	// keys reports the size of the two maps (may be nil).
	keys  *prometheus.GaugeVec
	mu    sync.Mutex
	users limiters[[sha256.Size]byte]
	ips   limiters[netip.Prefix]
}

func newThrottle(cfg LoginThrottle, keys *prometheus.GaugeVec) *throttle {
	return &throttle{cfg: cfg, maxKeys: maxThrottleKeys, keys: keys,
		users: limiters[[sha256.Size]byte]{m: map[[sha256.Size]byte]*rate.Limiter{}},
		ips:   limiters[netip.Prefix]{m: map[netip.Prefix]*rate.Limiter{}}}
}

// attempt takes one attempt from ip's allowance and then one from user's before the
// password is checked, so parallel guesses cannot all pass a check made before any
// of them failed. wait > 0 means no attempt is left (and none was taken); an address
// already refused leaves no trace of the username. The caller reports the outcome
// with done: a success resets the username and gives the address its attempt back;
// an attempt the server could not judge (no password check slot) gives both back,
// since no password was tried.
func (t *throttle) attempt(user string, ip netip.Addr, now time.Time) (wait time.Duration, done func(loginOutcome)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.report()
	ri := t.ips.get(throttleKey(ip), t.cfg.PerIP, t.cfg.Refill, t.maxKeys, now).ReserveN(now, 1)
	if wait = ri.DelayFrom(now); wait > 0 {
		ri.CancelAt(now)
		return wait, func(loginOutcome) {}
	}
	uk := sha256.Sum256([]byte(user))
	ru := t.users.get(uk, t.cfg.PerUser, t.cfg.Refill, t.maxKeys, now).ReserveN(now, 1)
	if wait = ru.DelayFrom(now); wait > 0 {
		ru.CancelAt(now)
		ri.CancelAt(now)
		return wait, func(loginOutcome) {}
	}
	return 0, func(outcome loginOutcome) {
		if outcome == loginFailed {
			return
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		if outcome == loginSucceeded {
			delete(t.users.m, uk)
		} else {
			ru.CancelAt(now)
		}
		ri.CancelAt(now)
		t.report()
	}
}

// loginOutcome is what became of an attempt the throttle let through.
type loginOutcome int

const (
	loginFailed    loginOutcome = iota // a wrong username or password: the attempt is spent
	loginSucceeded                     // the username's failures are forgotten
	loginAborted                       // no password was checked: nothing is spent
)

func (t *throttle) report() {
	if t.keys != nil {
		t.keys.WithLabelValues("username").Set(float64(len(t.users.m)))
		t.keys.WithLabelValues("address").Set(float64(len(t.ips.m)))
	}
}

// limiters is one map of limiters with its last sweep.
type limiters[K comparable] struct {
	m     map[K]*rate.Limiter
	swept time.Time
}

// get returns key's limiter, creating it. Before a new key is added, at most once a
// refill interval and whenever the map is full, the keys back to a full allowance
// are dropped: they remember nothing.
func (l *limiters[K]) get(key K, burst int, refill time.Duration, maxKeys int, now time.Time) *rate.Limiter {
	if lim := l.m[key]; lim != nil {
		return lim
	}
	if len(l.m) >= maxKeys || now.Sub(l.swept) >= refill {
		l.sweep(now, maxKeys)
	}
	lim := rate.NewLimiter(rate.Every(refill), max(burst, 1))
	l.m[key] = lim
	return lim
}

// sweep drops the limiters back to a full allowance. When the map is still full,
// every key is spending attempts: the one closest to a full allowance goes, so that
// the keys under the heaviest guessing are forgotten last.
func (l *limiters[K]) sweep(now time.Time, maxKeys int) {
	l.swept = now
	var fullest K
	most := -1.0
	for k, lim := range l.m {
		tokens := lim.TokensAt(now)
		if tokens >= float64(lim.Burst()) {
			delete(l.m, k)
			continue
		}
		if tokens > most {
			fullest, most = k, tokens
		}
	}
	if len(l.m) >= maxKeys && most >= 0 {
		delete(l.m, fullest)
	}
}

// throttleKey is the block an address is throttled as: an IPv4 address alone, an
// IPv6 address by its /64. An address that could not be read is one key of its own.
func throttleKey(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := a.BitLen()
	if a.Is6() {
		bits = ipv6ThrottleBits
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// clientIP is the address a sign-in comes from: the connection's peer; or, when the
// peer is one of the trusted proxies and header is set (e.g. X-Forwarded-For), the
// last address in that header — the one the proxy appended; earlier ones are the
// client's to make up. Anyone else's header is ignored: a pod that reaches the
// public port directly could otherwise give each guess a new address.
func clientIP(r *http.Request, header string, trusted []netip.Prefix) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := peer.Addr().Unmap()
	if header == "" || !inPrefixes(trusted, addr) {
		return addr
	}
	vs := r.Header.Values(header)
	if len(vs) == 0 {
		return addr
	}
	parts := strings.Split(vs[len(vs)-1], ",")
	if fwd, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
		return fwd.Unmap().WithZone("")
	}
	return addr
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// logUsername shortens what a visitor typed as their username to what a log line
// needs: the log is not theirs to fill.
func logUsername(user string) string {
	const limit = 64
	if len(user) <= limit {
		return user
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(user[cut]) {
		cut--
	}
	return user[:cut] + "…"
}
