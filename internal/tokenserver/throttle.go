package tokenserver

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

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

// maxThrottleKeys bounds the memory of the limiters: past it, keys that are back to a
// full allowance (and so hold nothing worth remembering) are dropped.
const maxThrottleKeys = 10000

type throttle struct {
	cfg   LoginThrottle
	mu    sync.Mutex
	users map[string]*rate.Limiter
	ips   map[string]*rate.Limiter
}

func newThrottle(cfg LoginThrottle) *throttle {
	return &throttle{cfg: cfg, users: map[string]*rate.Limiter{}, ips: map[string]*rate.Limiter{}}
}

// attempt takes one attempt from user's allowance and one from ip's before the
// password is checked, so parallel guesses cannot all pass a check made before any
// of them failed. wait > 0 means no attempt is left (and none was taken). The caller
// reports the outcome with done: a success resets the username and gives the
// address its attempt back.
func (t *throttle) attempt(user, ip string, now time.Time) (wait time.Duration, done func(ok bool)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ru := t.limiter(t.users, user, t.cfg.PerUser, now).ReserveN(now, 1)
	ri := t.limiter(t.ips, ip, t.cfg.PerIP, now).ReserveN(now, 1)
	if wait = max(ru.DelayFrom(now), ri.DelayFrom(now)); wait > 0 {
		ru.CancelAt(now)
		ri.CancelAt(now)
		return wait, func(bool) {}
	}
	return 0, func(ok bool) {
		if !ok {
			return
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.users, user)
		ri.CancelAt(now)
	}
}

func (t *throttle) limiter(m map[string]*rate.Limiter, key string, burst int, now time.Time) *rate.Limiter {
	if l := m[key]; l != nil {
		return l
	}
	if len(m) >= maxThrottleKeys {
		for k, old := range m {
			if old.TokensAt(now) >= float64(old.Burst()) {
				delete(m, k)
			}
		}
	}
	l := rate.NewLimiter(rate.Every(t.cfg.Refill), max(burst, 1))
	m[key] = l
	return l
}

// clientIP is the address a sign-in comes from: the connection's peer, or, behind a
// proxy named by header (e.g. X-Forwarded-For), the last address that proxy
// appended — earlier ones are the client's to make up.
func clientIP(r *http.Request, header string) string {
	if header != "" {
		if vs := r.Header.Values(header); len(vs) > 0 {
			parts := strings.Split(vs[len(vs)-1], ",")
			if ip := strings.TrimSpace(parts[len(parts)-1]); ip != "" {
				return ip
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
