package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// testDeviceCodes: a device authorization is pending until decided; a user code is
// held by one pending authorization and can be decided once; polls sooner than the
// interval are slowed down, the interval growing by DeviceSlowDownStep each time; the
// approved session reads back; another client's poll neither reads it nor slows it;
// an approved code is spent once even when two polls read it approved; past its
// expiry a code is expired.
func testDeviceCodes(t *testing.T, newStore Factory) {
	ctx := context.Background()
	clock := NewClock()
	s := newStore(t, Config{Now: clock.Now})
	mustPutClient(t, s, testClient("grafana"))
	mustPutClient(t, s, testClient("other"))
	create := func(device, user string) error {
		t.Helper()
		r := request(t, s, "req-"+device, "", "", clock.Now())
		return s.CreateDeviceCodeSession(ctx, device, user, 5, clock.Now().Add(10*time.Minute), r)
	}
	if err := create("dev-1", "user-1"); err != nil {
		t.Fatal(err)
	}
	if err := create("dev-2", "user-1"); !errors.Is(err, store.ErrUserCodeTaken) {
		t.Errorf("a second authorization with a pending user code: %v; want store.ErrUserCodeTaken", err)
	}
	got, err := s.GetDeviceCodeSessionByUserCode(ctx, "user-1")
	if err != nil || got.GetID() != "req-dev-1" || got.GetClient().GetID() != "grafana" ||
		!slices.Equal(got.GetRequestedScopes(), fosite.Arguments{"openid", "profile"}) {
		t.Fatalf("GetDeviceCodeSessionByUserCode = %+v, %v; want the pending request", got, err)
	}
	poll := func(device, client string, slack time.Duration) (fosite.Requester, error) {
		t.Helper()
		return s.PollDeviceCode(ctx, device, client, &Session{}, slack)
	}
	if _, err := poll("dev-1", "grafana", 0); !errors.Is(err, store.ErrDevicePending) {
		t.Errorf("first poll: %v; want ErrDevicePending", err)
	}
	clock.Step(4 * time.Second)
	if _, err := poll("dev-1", "grafana", 0); !errors.Is(err, store.ErrDeviceSlowDown) {
		t.Errorf("a poll 4 s after the last, interval 5 s: %v; want ErrDeviceSlowDown", err)
	}
	clock.Step(9 * time.Second)
	if _, err := poll("dev-1", "grafana", 0); !errors.Is(err, store.ErrDeviceSlowDown) {
		t.Errorf("a poll 9 s after the last, interval now 10 s: %v; want ErrDeviceSlowDown", err)
	}
	clock.Step(15 * time.Second)
	if _, err := poll("dev-1", "grafana", 0); !errors.Is(err, store.ErrDevicePending) {
		t.Errorf("a poll 15 s after the last, interval 15 s: %v; want ErrDevicePending", err)
	}
	if _, err := poll("dev-1", "other", 0); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("another client's poll: %v; want fosite.ErrNotFound", err)
	}
	clock.Step(15 * time.Second)
	if _, err := poll("dev-1", "grafana", 0); !errors.Is(err, store.ErrDevicePending) {
		t.Errorf("another client's poll slowed the device down: %v; want ErrDevicePending", err)
	}

	approved := request(t, s, "req-dev-1", "alice", "", clock.Now())
	approved.GrantedScope = fosite.Arguments{"openid"}
	if err := s.DecideDeviceCode(ctx, "user-1", approved); err != nil {
		t.Fatal(err)
	}
	if err := s.DecideDeviceCode(ctx, "user-1", nil); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("deciding a user code twice: %v; want fosite.ErrNotFound", err)
	}
	if _, err := s.GetDeviceCodeSessionByUserCode(ctx, "user-1"); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("a decided user code: %v; want fosite.ErrNotFound", err)
	}
	// Two polls that both read the code approved (a slack beyond the interval lets
	// the second through): the code is spent once.
	clock.Step(15 * time.Second)
	a, errA := poll("dev-1", "grafana", time.Hour)
	b, errB := poll("dev-1", "grafana", time.Hour)
	if errA != nil || errB != nil || a.GetSession().GetSubject() != "alice" || b.GetSession().GetSubject() != "alice" ||
		!slices.Equal(a.GetGrantedScopes(), fosite.Arguments{"openid"}) {
		t.Fatalf("polls after the approval: %+v %v, %v; want alice's request with openid granted", a, errA, errB)
	}
	if err := s.InvalidateDeviceCodeSession(ctx, "dev-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.InvalidateDeviceCodeSession(ctx, "dev-1"); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("spending an approved code twice: %v; want fosite.ErrNotFound", err)
	}
	if _, err := poll("dev-1", "grafana", time.Hour); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("a spent code: %v; want fosite.ErrNotFound", err)
	}

	// Denied; and a user code is free again once its authorization is decided.
	if err := create("dev-3", "user-1"); err != nil {
		t.Fatalf("a decided user code drawn again: %v", err)
	}
	if err := s.DecideDeviceCode(ctx, "user-1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := poll("dev-3", "grafana", 0); !errors.Is(err, store.ErrDeviceDenied) {
		t.Errorf("a denied code: %v; want ErrDeviceDenied", err)
	}
	if err := s.InvalidateDeviceCodeSession(ctx, "dev-3"); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("spending a denied code: %v; want fosite.ErrNotFound", err)
	}

	// Expiry.
	if err := create("dev-4", "user-4"); err != nil {
		t.Fatal(err)
	}
	clock.Step(10 * time.Minute)
	// The janitor sweeping at the expiry leaves the device code, so that its device
	// is told it expired rather than that it was never issued.
	for {
		n, err := s.DeleteExpired(ctx, clock.Now().Add(time.Second), 100)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if _, err := poll("dev-4", "grafana", 0); !errors.Is(err, store.ErrDeviceExpired) {
		t.Errorf("a code past its expiry, after the janitor: %v; want ErrDeviceExpired", err)
	}
	if _, err := s.GetDeviceCodeSessionByUserCode(ctx, "user-4"); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("an expired user code: %v; want fosite.ErrNotFound", err)
	}
	if err := s.DecideDeviceCode(ctx, "user-4", nil); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("deciding an expired code: %v; want fosite.ErrNotFound", err)
	}
}
