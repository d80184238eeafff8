package tokenserver

import (
	"math"
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

// wait is how long until user may try again from ip; 0 if now.
func (t *throttle) wait(user, ip string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return max(t.waitOf(t.users[user], now), t.waitOf(t.ips[ip], now))
}

func (t *throttle) waitOf(l *rate.Limiter, now time.Time) time.Duration {
	if l == nil {
		return 0
	}
	tokens := l.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - tokens) * float64(t.cfg.Refill)))
}

// failed spends one attempt of user's and of ip's.
func (t *throttle) failed(user, ip string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.spend(t.users, user, t.cfg.PerUser, now)
	t.spend(t.ips, ip, t.cfg.PerIP, now)
}

// succeeded gives user a full allowance again; the address keeps its count, so one
// known account does not reset guessing at others.
func (t *throttle) succeeded(user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.users, user)
}

func (t *throttle) spend(m map[string]*rate.Limiter, key string, burst int, now time.Time) {
	if burst <= 0 {
		return
	}
	l := m[key]
	if l == nil {
		if len(m) >= maxThrottleKeys {
			for k, old := range m {
				if old.TokensAt(now) >= float64(old.Burst()) {
					delete(m, k)
				}
			}
		}
		l = rate.NewLimiter(rate.Every(t.cfg.Refill), burst)
		m[key] = l
	}
	l.AllowN(now, 1)
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
