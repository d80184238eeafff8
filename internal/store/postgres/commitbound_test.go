package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/store/storetest"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

// stalledStandby starts a primary whose synchronous standby never connects
// (synchronous_standby_names names one that never comes) and returns a migrated
// database on it with a client, "grafana", and an authorization code, "code-1", for
// it. Every session but the ones a test opens with synchronous_commit=on commits
// locally, so that setting up waits for no standby.
func stalledStandby(t *testing.T) (dsn string, clock *storetest.Clock) {
	t.Helper()
	ctx := context.Background()
	primary := testpg.StalledStandby(t)
	dsn = primary.NewMigratedDatabase(t)
	clock = storetest.NewClock()
	setup, err := postgres.Open(ctx, dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = setup.Close() }()
	if _, err := setup.PutClient(ctx, client("secret")); err != nil {
		t.Fatal(err)
	}
	if err := setup.CreateAuthorizeCodeSession(ctx, "code-1", tokenRequest(t, setup, "code", clock.Now())); err != nil {
		t.Fatal(err)
	}
	return dsn, clock
}

// exchangeInTx stores a code exchange as fosite's authorization-code handler does.
func exchangeInTx(ctx context.Context, s *postgres.Store, code, newAT, newRT string, clock *storetest.Clock, t *testing.T) error {
	return pairInTx(ctx, s, func(ctx context.Context) error { return s.InvalidateAuthorizeCodeSession(ctx, code) },
		newAT, newRT, tokenRequest(t, s, "code", clock.Now()))
}

// Every COMMIT of the store is bounded, and one whose wait was cut short fails its
// request, on a primary whose synchronous standby never connects: the code exchange
// (fosite's transaction, begun in the database by the code's invalidation), a
// revocation (a transaction of the store's own) and a write outside a transaction
// (fosite's deletion of the PKCE session). PostgreSQL reports each as a success once
// its wait is cancelled, with the rows committed on the primary only, which a
// failover to the standby would lose: answered, the code exchange would hand out
// tokens that then stop working and leave the code usable again; the revocation
// would be answered 200 for a token that then works again.
func TestCommitsAreBoundedWithAStalledStandby(t *testing.T) {
	ctx := context.Background()
	dsn, clock := stalledStandby(t)
	local, err := postgres.Open(ctx, dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	req := tokenRequest(t, local, "chain", clock.Now())
	if err := local.CreateAccessTokenSession(ctx, "at-0", req); err != nil {
		t.Fatal(err)
	}
	if err := local.CreatePKCERequestSession(ctx, "code-1", req); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	count := func(query string) int {
		t.Helper()
		var n int
		if err := db.QueryRowContext(ctx, query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	const bound = 300 * time.Millisecond
	stalled, err := postgres.Open(ctx, dsn+" synchronous_commit=on", postgres.Options{Now: clock.Now, CommitTimeout: bound})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stalled.Close() })

	// A client that sets no deadline: only the bound ends the waits.
	for name, write := range map[string]func() error{
		"code exchange": func() error { return exchangeInTx(ctx, stalled, "code-1", "at-1", "rt-1", clock, t) },
		"revocation":    func() error { return stalled.RevokeAccessToken(ctx, "chain") },
		"PKCE deletion": func() error { return stalled.DeletePKCERequestSession(ctx, "code-1") },
	} {
		if err := within(t, name, write); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s whose COMMIT was cut short: %v; want ErrUnavailable, not an answer", name, err)
		}
	}
	// The case this is about: PostgreSQL committed each on the primary.
	if n := count(`SELECT count(*) FROM tokens WHERE signature IN ('at-1', 'rt-1')
    OR kind = 'authorize_code' AND signature = 'code-1' AND NOT active`); n != 3 {
		t.Errorf("%d of the code exchange's 3 rows committed on the primary; the wait was not the COMMIT's", n)
	}
	if n := count(`SELECT count(*) FROM tokens WHERE signature = 'at-0' OR kind = 'pkce'`); n != 0 {
		t.Errorf("%d rows the revocation and the PKCE deletion deleted are still there; the wait was not the COMMIT's", n)
	}

	// A client whose own deadline ends the wait, well within the bound: the request's
	// context cancels the wait as the bound does, and PostgreSQL reports success.
	if err := local.CreateAuthorizeCodeSession(ctx, "code-2", tokenRequest(t, local, "code", clock.Now())); err != nil {
		t.Fatal(err)
	}
	patient, err := postgres.Open(ctx, dsn+" synchronous_commit=on", postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = patient.Close() })
	reqCtx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	err = within(t, "code exchange", func() error { return exchangeInTx(reqCtx, patient, "code-2", "at-2", "rt-2", clock, t) })
	if err == nil {
		t.Error("a code exchange whose request ended during its COMMIT was answered")
	}
	if n := count(`SELECT count(*) FROM tokens WHERE signature IN ('at-2', 'rt-2')`); n != 2 {
		t.Errorf("%d of the code exchange's 2 tokens committed on the primary; the wait was not the COMMIT's", n)
	}

	// No wait outlives its bound: no connection is left waiting for the standby.
	if n := count(`SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'`); n != 0 {
		t.Errorf("%d backends still wait for the standby", n)
	}
	for name, s := range map[string]*postgres.Store{"bounded": stalled, "patient": patient} {
		if n := s.DB().Stats().InUse; n != 0 {
			t.Errorf("%s store: %d pool connections still in use", name, n)
		}
	}
}

// within runs write, and fails the test if it is still waiting far past any bound
// the test sets (it would otherwise hang forever).
func within(t *testing.T, name string, write func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- write() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: still waiting for its COMMIT after 30s", name)
		return nil
	}
}
