package tokenserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestThrottle(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	type try struct {
		user, ip string
		at       time.Duration // after t0
		ok       bool          // the password was right
		aborted  bool          // the server could not check the password
		wait     time.Duration // want: 0 means allowed
	}
	tests := map[string][]try{
		"a username runs out, then earns one attempt per refill": {
			{user: "alice", ip: "192.0.2.1"}, {user: "alice", ip: "192.0.2.2"}, {user: "alice", ip: "192.0.2.3"},
			{user: "alice", ip: "192.0.2.4", wait: time.Minute},
			{user: "alice", ip: "192.0.2.4", at: 30 * time.Second, wait: 30 * time.Second},
			{user: "alice", ip: "192.0.2.4", at: time.Minute},
			{user: "alice", ip: "192.0.2.4", at: time.Minute, wait: time.Minute},
		},
		"an address runs out across usernames": {
			{user: "a", ip: "198.51.100.1"}, {user: "b", ip: "198.51.100.1"}, {user: "c", ip: "198.51.100.1"}, {user: "d", ip: "198.51.100.1"}, {user: "e", ip: "198.51.100.1"},
			{user: "f", ip: "198.51.100.1", wait: time.Minute},
			{user: "f", ip: "198.51.100.2"},
		},
		"a success resets the username, not the address": {
			{user: "alice", ip: "192.0.2.1"}, {user: "alice", ip: "192.0.2.1"}, {user: "alice", ip: "192.0.2.1", ok: true},
			{user: "alice", ip: "192.0.2.1"}, {user: "alice", ip: "192.0.2.1"}, {user: "alice", ip: "192.0.2.1"},
			{user: "alice", ip: "192.0.2.1", wait: time.Minute},
		},
		"an IPv6 /64 is one address": {
			{user: "a", ip: "2001:db8::1"}, {user: "b", ip: "2001:db8::2"}, {user: "c", ip: "2001:db8::ffff:1"},
			{user: "d", ip: "2001:db8::ab:cd"}, {user: "e", ip: "2001:db8:0:0:8000::1"},
			{user: "f", ip: "2001:db8::9", wait: time.Minute},
			{user: "f", ip: "2001:db8:0:1::1"},
		},
		"an IPv4-mapped IPv6 address is the IPv4 address": {
			{user: "a", ip: "192.0.2.7"}, {user: "b", ip: "::ffff:192.0.2.7"}, {user: "c", ip: "192.0.2.7"},
			{user: "d", ip: "::ffff:192.0.2.7"}, {user: "e", ip: "192.0.2.7"},
			{user: "f", ip: "::ffff:192.0.2.7", wait: time.Minute},
			{user: "f", ip: "192.0.2.8"},
		},
		"an attempt the server could not check costs nothing": {
			{user: "alice", ip: "192.0.2.1", aborted: true}, {user: "alice", ip: "192.0.2.1", aborted: true},
			{user: "alice", ip: "192.0.2.1", aborted: true}, {user: "alice", ip: "192.0.2.1", aborted: true},
			{user: "alice", ip: "192.0.2.1", aborted: true}, {user: "alice", ip: "192.0.2.1", aborted: true},
			{user: "alice", ip: "192.0.2.1"}, {user: "alice", ip: "192.0.2.1"}, {user: "alice", ip: "192.0.2.1"},
			{user: "alice", ip: "192.0.2.1", wait: time.Minute},
		},
		"a throttled attempt costs nothing": {
			{user: "alice", ip: "192.0.2.1"}, {user: "alice", ip: "192.0.2.1"}, {user: "alice", ip: "192.0.2.1"},
			{user: "alice", ip: "192.0.2.1", wait: time.Minute}, {user: "alice", ip: "192.0.2.1", wait: time.Minute},
			{user: "alice", ip: "192.0.2.1", at: time.Minute},
		},
	}
	for name, tries := range tests {
		t.Run(name, func(t *testing.T) {
			th := newThrottle(LoginThrottle{PerUser: 3, PerIP: 5, Refill: time.Minute}, nil)
			for i, tr := range tries {
				wait, done := th.attempt(tr.user, netip.MustParseAddr(tr.ip), t0.Add(tr.at))
				if wait.Round(time.Second) != tr.wait {
					t.Fatalf("try %d (%s from %s at +%v): wait %v, want %v", i, tr.user, tr.ip, tr.at, wait, tr.wait)
				}
				switch {
				case tr.aborted:
					done(loginAborted)
				case tr.ok:
					done(loginSucceeded)
				default:
					done(loginFailed)
				}
			}
		})
	}
}

// The limiters stay within their bound however many usernames and addresses fail:
// keys back to a full allowance go first, then the one closest to it, so a username
// out of attempts outlasts thousands tried once; and an address already refused
// adds no username.
func TestThrottleIsBounded(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	th := newThrottle(LoginThrottle{PerUser: 3, PerIP: 3, Refill: time.Minute}, nil)
	th.maxKeys = 50
	victim := netip.MustParseAddr("192.0.2.1")
	for range 3 {
		_, done := th.attempt("alice", victim, t0)
		done(loginFailed)
	}
	for i := range 1000 {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		for j := range 5 {
			_, done := th.attempt(fmt.Sprintf("user-%d-%d-%s", i, j, strings.Repeat("x", 200)), ip, t0.Add(time.Duration(i)*time.Millisecond))
			done(loginFailed)
		}
		if len(th.users.m) > th.maxKeys || len(th.ips.m) > th.maxKeys {
			t.Fatalf("after %d addresses: %d usernames, %d addresses; want at most %d each", i+1, len(th.users.m), len(th.ips.m), th.maxKeys)
		}
	}
	// alice has no attempt left; the 5,000 other names had one failure each.
	if wait, _ := th.attempt("alice", netip.MustParseAddr("192.0.2.200"), t0.Add(time.Second)); wait == 0 {
		t.Error("the username under the heaviest guessing was forgotten while the map was full")
	}

	// One address out of attempts: more usernames add nothing.
	th = newThrottle(LoginThrottle{PerUser: 3, PerIP: 3, Refill: time.Minute}, nil)
	for i := range 100 {
		_, done := th.attempt(fmt.Sprintf("user-%d", i), victim, t0)
		done(loginFailed)
	}
	if len(th.users.m) != 3 || len(th.ips.m) != 1 {
		t.Errorf("100 usernames from an address with 3 attempts: %d usernames, %d addresses remembered; want 3 and 1",
			len(th.users.m), len(th.ips.m))
	}

	// Keys back to a full allowance are dropped after a refill interval, full map
	// or not.
	_, done := th.attempt("bob", netip.MustParseAddr("192.0.2.99"), t0.Add(time.Hour))
	done(loginFailed)
	if len(th.users.m) != 1 || len(th.ips.m) != 1 {
		t.Errorf("an hour later: %d usernames, %d addresses remembered; want only the new ones", len(th.users.m), len(th.ips.m))
	}
}

// The address of a sign-in: the peer's, unless the peer is a trusted proxy and sets
// the header.
func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := map[string]struct {
		remote, header string
		trusted        []netip.Prefix
		want           string
	}{
		"no header configured":          {remote: "203.0.113.9:4000", header: "198.51.100.1", want: "203.0.113.9"},
		"header from an untrusted peer": {remote: "203.0.113.9:4000", header: "198.51.100.1", trusted: trusted, want: "203.0.113.9"},
		"header from a trusted proxy":   {remote: "10.1.2.3:4000", header: "198.51.100.1", trusted: trusted, want: "198.51.100.1"},
		"last entry counts":             {remote: "10.1.2.3:4000", header: "192.0.2.66, 198.51.100.1", trusted: trusted, want: "198.51.100.1"},
		"IPv6 trusted proxy":            {remote: "[fd00::1]:4000", header: "2001:db8::5", trusted: trusted, want: "2001:db8::5"},
		"garbage from a trusted proxy":  {remote: "10.1.2.3:4000", header: "not-an-address", trusted: trusted, want: "10.1.2.3"},
		"mapped peer":                   {remote: "[::ffff:10.1.2.3]:4000", header: "198.51.100.1", trusted: trusted, want: "198.51.100.1"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.remote, Header: http.Header{}}
			r.Header.Set("X-Forwarded-For", tt.header)
			hdr := "X-Forwarded-For"
			if tt.trusted == nil {
				hdr = ""
			}
			if got := clientIP(r, hdr, tt.trusted); got.String() != tt.want {
				t.Errorf("clientIP = %s, want %s", got, tt.want)
			}
		})
	}
}

// A users file naming someone who could never sign in is refused, by line.
func TestUsersFileRefusesOverlongNames(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	path := t.TempDir() + "/users"
	if err := os.WriteFile(path, []byte("alice:"+string(hash)+"\n"+strings.Repeat("b", 257)+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadUsers(path); err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "at most 256") {
		t.Errorf("a 257-byte username in the users file: %v; want it refused, naming line 2", err)
	}
}

// Password checks beyond MaxConcurrentLogins wait for a slot, and give up with the
// request rather than pile up.
func TestPasswordChecksAreBounded(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	users, err := StaticUsers(map[string][]byte{"alice": hash})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Users: users, MaxConcurrentLogins: 1})
	if err := s.bcryptSlots.Acquire(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.checkPassword(ctx, "alice", "pw"); !errors.Is(err, context.Canceled) {
		t.Errorf("a check with every slot taken: %v, want it to wait and give up with the request", err)
	}
	s.bcryptSlots.Release(1)
	if _, ok, err := s.checkPassword(context.Background(), "alice", "pw"); !ok || err != nil {
		t.Errorf("with a free slot: %v %v", ok, err)
	}
}
