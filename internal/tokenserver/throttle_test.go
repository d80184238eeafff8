package tokenserver

import (
	"context"
	"errors"
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
		wait     time.Duration // want: 0 means allowed
	}
	tests := map[string][]try{
		"a username runs out, then earns one attempt per refill": {
			{user: "alice", ip: "a"}, {user: "alice", ip: "b"}, {user: "alice", ip: "c"},
			{user: "alice", ip: "d", wait: time.Minute},
			{user: "alice", ip: "d", at: 30 * time.Second, wait: 30 * time.Second},
			{user: "alice", ip: "d", at: time.Minute},
			{user: "alice", ip: "d", at: time.Minute, wait: time.Minute},
		},
		"an address runs out across usernames": {
			{user: "a", ip: "x"}, {user: "b", ip: "x"}, {user: "c", ip: "x"}, {user: "d", ip: "x"}, {user: "e", ip: "x"},
			{user: "f", ip: "x", wait: time.Minute},
			{user: "f", ip: "y"},
		},
		"a success resets the username, not the address": {
			{user: "alice", ip: "a"}, {user: "alice", ip: "a"}, {user: "alice", ip: "a", ok: true},
			{user: "alice", ip: "a"}, {user: "alice", ip: "a"}, {user: "alice", ip: "a"},
			{user: "alice", ip: "a", wait: time.Minute},
		},
		"a throttled attempt costs nothing": {
			{user: "alice", ip: "a"}, {user: "alice", ip: "a"}, {user: "alice", ip: "a"},
			{user: "alice", ip: "a", wait: time.Minute}, {user: "alice", ip: "a", wait: time.Minute},
			{user: "alice", ip: "a", at: time.Minute},
		},
	}
	for name, tries := range tests {
		t.Run(name, func(t *testing.T) {
			th := newThrottle(LoginThrottle{PerUser: 3, PerIP: 5, Refill: time.Minute})
			for i, tr := range tries {
				wait, done := th.attempt(tr.user, tr.ip, t0.Add(tr.at))
				if wait.Round(time.Second) != tr.wait {
					t.Fatalf("try %d (%s from %s at +%v): wait %v, want %v", i, tr.user, tr.ip, tr.at, wait, tr.wait)
				}
				done(tr.ok)
			}
		})
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
	if _, err := s.checkPassword(ctx, "alice", "pw"); !errors.Is(err, context.Canceled) {
		t.Errorf("a check with every slot taken: %v, want it to wait and give up with the request", err)
	}
	s.bcryptSlots.Release(1)
	if ok, err := s.checkPassword(context.Background(), "alice", "pw"); !ok || err != nil {
		t.Errorf("with a free slot: %v %v", ok, err)
	}
}
