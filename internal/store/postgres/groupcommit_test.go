package postgres_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/store/storetest"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

// commitGate makes every COMMIT that wrote a token wait for the test: a deferred
// constraint trigger takes advisory lock 7 (shared) at commit time, and the test
// holds it exclusively until it opens the gate. A token whose signature starts with
// "bad-" fails its transaction at COMMIT.
type commitGate struct {
	db     *sql.DB
	conn   *sql.Conn
	opened atomic.Bool
}

func newCommitGate(t *testing.T, dsn string) *commitGate {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.ExecContext(ctx, `
CREATE FUNCTION commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The gate stands for a slow COMMIT (a WAL flush), which no lock_timeout ends:
    -- the batch's own lock_timeout must not end this wait either.
    PERFORM set_config('lock_timeout', '0', true);
    PERFORM pg_advisory_xact_lock_shared(7);
    IF NEW.signature LIKE 'bad-%' THEN
        RAISE EXCEPTION 'refused at commit: %', NEW.signature;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER commit_gate AFTER INSERT ON tokens DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION commit_gate()`); err != nil {
		t.Fatal(err)
	}
	g := &commitGate{db: db}
	if g.conn, err = db.Conn(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.conn.Close() })
	if _, err := g.conn.ExecContext(ctx, `SELECT pg_advisory_lock(7)`); err != nil {
		t.Fatal(err)
	}
	return g
}

// waitForCommits returns once n transactions wait at the gate, their statements done.
func (g *commitGate) waitForCommits(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := g.db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7 AND NOT granted`).
			Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transactions wait at the gate after 10s, want %d", waiting, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (g *commitGate) open(t *testing.T) {
	t.Helper()
	g.opened.Store(true)
	if _, err := g.conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(7)`); err != nil {
		t.Fatal(err)
	}
}

// committed is how many of the signatures are in the table, as another session sees.
func (g *commitGate) committed(t *testing.T, sigs []string) int {
	t.Helper()
	var n int
	if err := g.db.QueryRow(`SELECT count(*) FROM tokens WHERE signature = ANY(string_to_array($1, ','))`,
		strings.Join(sigs, ",")).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Concurrent token writes share commits (group commit): no request is answered
// before the COMMIT of its token returned, a batch that fails at COMMIT answers each
// of its requests with its own outcome (the good tokens are stored, the bad ones get
// an error), and one that fails for all answers every request with an error.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	s, clock, dsn := clientStore(t)
	gate := newCommitGate(t, dsn)

	// 48 requests: the first few commits wait at the gate while the rest queue behind
	// them, so that they go in shared batches once it opens. Every fourth fails.
	sigs := make([]string, 0, 48)
	for i := range 48 {
		prefix := "good-"
		if i%4 == 3 {
			prefix = "bad-"
		}
		sigs = append(sigs, fmt.Sprintf("%s%02d", prefix, i))
	}
	errs := make([]error, len(sigs))
	var wg sync.WaitGroup
	for i, sig := range sigs {
		req := tokenRequest(t, s, "req-"+sig, clock.Now())
		wg.Go(func() {
			errs[i] = s.CreateAccessTokenSession(ctx, sig, req)
			if !gate.opened.Load() {
				t.Errorf("%s answered (err %v) while its COMMIT was held at the gate", sig, errs[i])
			}
		})
	}
	gate.waitForCommits(t, 1)
	if n := gate.committed(t, sigs); n != 0 {
		t.Fatalf("%d tokens visible before any COMMIT returned", n)
	}
	gate.open(t)
	wg.Wait()
	var good []string
	for i, sig := range sigs {
		switch {
		case strings.HasPrefix(sig, "bad-") && errs[i] == nil:
			t.Errorf("%s: stored, though its commit failed", sig)
		case strings.HasPrefix(sig, "good-") && errs[i] != nil:
			t.Errorf("%s: %v; want it stored despite the bad tokens committed with it", sig, errs[i])
		case errs[i] == nil:
			good = append(good, sig)
		}
	}
	if n := gate.committed(t, sigs); n != len(good) {
		t.Errorf("%d tokens stored, want the %d answered without an error", n, len(good))
	}
	for _, sig := range good {
		if _, err := s.GetAccessTokenSession(ctx, sig, &storetest.Session{}); err != nil {
			t.Errorf("%s answered as stored, then: %v", sig, err)
		}
	}

	t.Run("a failed commit fails every request in it", func(t *testing.T) {
		if _, err := gate.conn.ExecContext(ctx, `SELECT pg_advisory_lock(7)`); err != nil {
			t.Fatal(err)
		}
		gate.opened.Store(false)
		bad := make([]string, 0, 16)
		for i := range 16 {
			bad = append(bad, fmt.Sprintf("bad-all-%02d", i))
		}
		var wg sync.WaitGroup
		for _, sig := range bad {
			req := tokenRequest(t, s, "req-"+sig, clock.Now())
			wg.Go(func() {
				err := s.CreateAccessTokenSession(ctx, sig, req)
				if err == nil {
					t.Errorf("%s: stored, though its commit failed", sig)
				}
				if !gate.opened.Load() {
					t.Errorf("%s answered while its COMMIT was held at the gate", sig)
				}
			})
		}
		gate.waitForCommits(t, 1)
		gate.open(t)
		wg.Wait()
		if n := gate.committed(t, bad); n != 0 {
			t.Errorf("%d tokens of failed commits stored", n)
		}
	})
}

// A request that gives up while its write still waits for a batch withdraws it: it
// is never written, whatever happens to the batches before it.
func TestGroupCommitWithdrawsACanceledRequest(t *testing.T) {
	ctx := context.Background()
	s, clock, dsn := clientStore(t)
	gate := newCommitGate(t, dsn)
	// Every batch writer blocked at the gate, one request each, one after the other.
	var wg sync.WaitGroup
	held := make([]string, 0, postgres.GroupCommitMaxFlushes)
	for i := range postgres.GroupCommitMaxFlushes {
		sig := fmt.Sprintf("held-%d", i)
		held = append(held, sig)
		req := tokenRequest(t, s, "req-"+sig, clock.Now())
		wg.Go(func() {
			if err := s.CreateAccessTokenSession(ctx, sig, req); err != nil {
				t.Errorf("%s: %v", sig, err)
			}
		})
		gate.waitForCommits(t, i+1)
	}
	canceled, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	req := tokenRequest(t, s, "req-withdrawn", clock.Now())
	go func() { errc <- s.CreateAccessTokenSession(canceled, "withdrawn", req) }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled while queued: err = %v, want context.Canceled", err)
	}
	gate.open(t)
	wg.Wait()
	if n := gate.committed(t, held); n != len(held) {
		t.Errorf("%d of the %d held tokens stored", n, len(held))
	}
	if n := gate.committed(t, []string{"withdrawn"}); n != 0 {
		t.Error("the withdrawn token was written")
	}
}

// Refreshes in fosite's transaction go to the group commit as one unit each: every
// used refresh token is rotated (inactive, its access token gone) and every new pair
// stored, also when many share a batch; a refresh whose commit fails leaves its chain
// as it was.
func TestGroupCommitRotations(t *testing.T) {
	ctx := context.Background()
	s, clock, dsn := clientStore(t)
	const chains = 24
	for i := range chains {
		req := tokenRequest(t, s, fmt.Sprintf("chain-%02d", i), clock.Now())
		if err := s.CreateAccessTokenSession(ctx, fmt.Sprintf("at-%02d", i), req); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRefreshTokenSession(ctx, fmt.Sprintf("rt-%02d", i), fmt.Sprintf("at-%02d", i), req); err != nil {
			t.Fatal(err)
		}
		// Cached, so that the rotation must drop it.
		if _, err := s.GetAccessTokenSession(ctx, fmt.Sprintf("at-%02d", i), &storetest.Session{}); err != nil {
			t.Fatal(err)
		}
	}
	gate := newCommitGate(t, dsn)
	errs := make([]error, chains)
	var wg sync.WaitGroup
	for i := range chains {
		req := tokenRequest(t, s, fmt.Sprintf("chain-%02d", i), clock.Now())
		// The last chain's new access token fails at COMMIT.
		newAT := fmt.Sprintf("at2-%02d", i)
		if i == chains-1 {
			newAT = "bad-at2"
		}
		wg.Go(func() {
			errs[i] = refreshInTx(ctx, s, fmt.Sprintf("rt-%02d", i), newAT, fmt.Sprintf("rt2-%02d", i), req)
			if !gate.opened.Load() {
				t.Errorf("refresh %d answered while its COMMIT was held at the gate", i)
			}
		})
	}
	gate.waitForCommits(t, 1)
	gate.open(t)
	wg.Wait()
	for i := range chains {
		oldAT, oldRT := fmt.Sprintf("at-%02d", i), fmt.Sprintf("rt-%02d", i)
		_, atErr := s.GetAccessTokenSession(ctx, oldAT, &storetest.Session{})
		_, rtErr := s.GetRefreshTokenSession(ctx, oldRT, &storetest.Session{})
		if i == chains-1 {
			if errs[i] == nil {
				t.Errorf("refresh %d: committed, though its commit failed", i)
			}
			if atErr != nil || rtErr != nil {
				t.Errorf("refresh %d failed, yet its chain changed: access %v, refresh %v", i, atErr, rtErr)
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("refresh %d: %v", i, errs[i])
			continue
		}
		if !errors.Is(atErr, fosite.ErrNotFound) {
			t.Errorf("refresh %d: the used refresh token's access token: %v; want it gone (cache dropped)", i, atErr)
		}
		if !errors.Is(rtErr, fosite.ErrInactiveToken) {
			t.Errorf("refresh %d: the used refresh token: %v; want inactive", i, rtErr)
		}
		if _, err := s.GetAccessTokenSession(ctx, fmt.Sprintf("at2-%02d", i), &storetest.Session{}); err != nil {
			t.Errorf("refresh %d: the new access token: %v", i, err)
		}
		if _, err := s.GetRefreshTokenSession(ctx, fmt.Sprintf("rt2-%02d", i), &storetest.Session{}); err != nil {
			t.Errorf("refresh %d: the new refresh token: %v", i, err)
		}
	}
}

// refreshInTx stores a refresh as fosite's refresh handler does.
func refreshInTx(ctx context.Context, s *postgres.Store, oldRT, newAT, newRT string, req fosite.Requester) error {
	return pairInTx(ctx, s, func(ctx context.Context) error { return s.RotateRefreshToken(ctx, req.GetID(), oldRT) }, newAT, newRT, req)
}

// pairInTx stores a new access and refresh token in fosite's transaction, after first
// (the used refresh token's rotation, or the authorization code's invalidation), as
// fosite's handlers do.
func pairInTx(ctx context.Context, s *postgres.Store, first func(context.Context) error, newAT, newRT string, req fosite.Requester) error {
	ctx, err := s.BeginTX(ctx)
	if err != nil {
		return err
	}
	for _, step := range []func() error{
		func() error { return first(ctx) },
		func() error { return s.CreateAccessTokenSession(ctx, newAT, req) },
		func() error { return s.CreateRefreshTokenSession(ctx, newRT, newAT, req) },
	} {
		if err := step(); err != nil {
			_ = s.Rollback(ctx)
			return err
		}
	}
	return s.Commit(ctx)
}

// One tenant's locked client row holds up no other tenant's tokens. A client's
// deletion in progress holds the client's row while it cascades over the client's
// tokens, and every write of a token for that client waits for it on the foreign
// key: those requests wait, more of them than there are batch writers or pool
// connections, and only they. Another client's tokens and refreshes are written while
// the row is still locked; once the deletion commits, the waiting requests fail with
// ErrClientGone.
func TestGroupCommitLockedClientStallsNoOtherTenant(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	dsn := pg.NewMigratedDatabase(t)
	var lockTimeouts atomic.Int64
	const pool = 8
	s, err := postgres.Open(ctx, dsn, postgres.Options{Now: clock.Now, MaxOpenConns: pool, Hooks: postgres.Hooks{
		GroupCommit: postgres.GroupCommitHooks{Batch: func(_ int, outcome string) {
			if outcome == postgres.BatchLockTimeout {
				lockTimeouts.Add(1)
			}
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	a, b := client("secret"), client("secret")
	b.ID, b.OwnerNamespace = "other-tenant", "other"
	for _, c := range []*store.Client{a, b} {
		if _, err := s.PutClient(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	reqFor := func(clientID, id string) *fosite.Request {
		c, err := s.GetClient(ctx, clientID)
		if err != nil {
			t.Fatal(err)
		}
		sess := &storetest.Session{}
		sess.SetExpiresAt(fosite.AccessToken, clock.Now().Add(time.Hour))
		return &fosite.Request{ID: id, RequestedAt: clock.Now(), Client: c, Session: sess, Form: map[string][]string{}}
	}
	// Tenant B has a refresh-token chain to refresh meanwhile.
	chain := reqFor(b.ID, "b-chain")
	if err := s.CreateAccessTokenSession(ctx, "b-at-0", chain); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRefreshTokenSession(ctx, "b-rt-0", "b-at-0", chain); err != nil {
		t.Fatal(err)
	}
	const perWave = 2 * postgres.GroupCommitMaxFlushes
	aReqs := make([]*fosite.Request, 2*perWave)
	for i := range aReqs {
		aReqs[i] = reqFor(a.ID, fmt.Sprintf("a-%02d", i))
	}
	bReqs := make([]*fosite.Request, 16)
	for i := range bReqs {
		bReqs[i] = reqFor(b.ID, fmt.Sprintf("b-%02d", i))
	}

	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	deletion, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deletion.Rollback() })
	if _, err := deletion.ExecContext(ctx, `DELETE FROM clients WHERE id = $1`, a.ID); err != nil {
		t.Fatal(err)
	}
	// lockWaits is how many connections wait on a lock.
	lockWaits := func() int {
		t.Helper()
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually := func(cond func() bool, what string, args ...any) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after 10s, still not: "+what, args...)
			}
		}
	}
	type outcome struct {
		sig string
		err error
	}
	aDone := make(chan outcome, len(aReqs))
	issueA := func(i int) {
		sig := fmt.Sprintf("a-at-%02d", i)
		go func() { aDone <- outcome{sig, s.CreateAccessTokenSession(ctx, sig, aReqs[i])} }()
	}
	// Client A's workloads keep asking for tokens (this replica still has A cached),
	// one after the other, each waiting on A's row: more than there are batch writers,
	// and more than the pool has connections.
	for i := range perWave {
		issueA(i)
		eventually(func() bool { return postgres.GroupCommitLockWaits(s, a.ID) > i },
			"client A's write %d waits alone on A's row (the store takes it for locked)", i)
	}
	// Half the pool's connections wait on A's row, not more.
	eventually(func() bool { return lockWaits() >= pool/2 }, "%d connections wait on A's row", pool/2)
	if n := lockWaits(); n > pool/2 {
		t.Errorf("%d of the pool's %d connections wait on A's row, want at most %d", n, pool, pool/2)
	}
	if !postgres.GroupCommitIdle(s) {
		t.Error("batches queued or written while A's writes wait alone")
	}
	if lockTimeouts.Load() == 0 {
		t.Error("no batch reported a lock timeout, although A's writes waited on its row")
	}
	timeoutsBefore := lockTimeouts.Load()
	// Then B's requests and more of A's at once.
	bDone := make(chan outcome, len(bReqs)+1)
	for i, req := range bReqs {
		if perWave+i < len(aReqs) {
			issueA(perWave + i)
		}
		sig := fmt.Sprintf("b-at-%02d", i)
		go func() { bDone <- outcome{sig, s.CreateAccessTokenSession(ctx, sig, req)} }()
	}
	refresh := reqFor(b.ID, "b-chain")
	go func() { bDone <- outcome{"b-rt-1", refreshInTx(ctx, s, "b-rt-0", "b-at-1", "b-rt-1", refresh)} }()
	// B's requests all complete while A's row is still locked. The bound only keeps
	// a regression from hanging the test (it fails at once, naming what is stuck).
	watchdog := time.After(20 * time.Second)
	for range cap(bDone) {
		select {
		case o := <-bDone:
			if o.err != nil {
				t.Errorf("tenant B's %s failed while client A's row was locked: %v", o.sig, o.err)
			}
		case <-watchdog:
			t.Fatalf("tenant B's requests not answered after 20s while client A's row is locked (%d batches timed out on the lock)",
				lockTimeouts.Load())
		}
	}
	select {
	case o := <-aDone:
		t.Fatalf("client A's %s answered while its row is locked: %v", o.sig, o.err)
	default:
	}
	for _, sig := range []string{"b-at-00", "b-at-15", "b-at-1"} {
		if _, err := s.GetAccessTokenSession(ctx, sig, &storetest.Session{}); err != nil {
			t.Errorf("tenant B's %s answered as stored, then: %v", sig, err)
		}
	}
	if _, err := s.GetRefreshTokenSession(ctx, "b-rt-1", &storetest.Session{}); err != nil {
		t.Errorf("tenant B's new refresh token: %v", err)
	}
	if n := lockTimeouts.Load() - timeoutsBefore; n > 0 {
		t.Errorf("%d batches waited on A's row after it was known locked", n)
	}
	if n := lockWaits(); n > pool/2 {
		t.Errorf("%d of the pool's %d connections wait on A's row, want at most %d", n, pool, pool/2)
	}

	// The deletion completes: A's requests fail, each with the reason.
	if err := deletion.Commit(); err != nil {
		t.Fatal(err)
	}
	for range aReqs {
		if o := <-aDone; !errors.Is(o.err, store.ErrClientGone) {
			t.Errorf("client A's %s after A's deletion: %v, want ErrClientGone", o.sig, o.err)
		}
	}
	if n := postgres.GroupCommitLockWaits(s, a.ID); n != 0 {
		t.Errorf("client A's row still taken for locked (%d) after its writes ended", n)
	}
}

// A transaction the store has not yet begun in the database (fosite's, see
// BeginTX) ends as database/sql's do: a Commit after Rollback writes nothing, a
// second Commit after a failed one reports the failure again rather than success,
// a Commit after a Commit writes nothing twice, and no statement on the context
// after its end reaches the database.
func TestLazyTransactionEnds(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s, err := postgres.Open(ctx, pg.NewMigratedDatabase(t), postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.PutClient(ctx, client("secret")); err != nil {
		t.Fatal(err)
	}
	stored := func(sig string) bool {
		_, err := s.GetAccessTokenSession(ctx, sig, &storetest.Session{})
		return err == nil
	}

	t.Run("Commit after Rollback", func(t *testing.T) {
		txc, err := s.BeginTX(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAccessTokenSession(txc, "rolled-back", tokenRequest(t, s, "r1", clock.Now())); err != nil {
			t.Fatal(err)
		}
		if err := s.Rollback(txc); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAccessTokenSession(txc, "after-rollback", tokenRequest(t, s, "r1", clock.Now())); err == nil {
			t.Error("a write on a rolled-back transaction succeeded")
		}
		if err := s.Commit(txc); !errors.Is(err, sql.ErrTxDone) {
			t.Errorf("Commit after Rollback: %v, want sql.ErrTxDone", err)
		}
		if err := s.Rollback(txc); !errors.Is(err, sql.ErrTxDone) {
			t.Errorf("second Rollback: %v, want sql.ErrTxDone", err)
		}
		for _, sig := range []string{"rolled-back", "after-rollback"} {
			if stored(sig) {
				t.Errorf("%s, written in a transaction that was rolled back, is stored", sig)
			}
		}
	})

	t.Run("Commit after Commit", func(t *testing.T) {
		txc, err := s.BeginTX(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAccessTokenSession(txc, "committed", tokenRequest(t, s, "r2", clock.Now())); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(txc); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(txc); !errors.Is(err, sql.ErrTxDone) {
			t.Errorf("second Commit: %v, want sql.ErrTxDone", err)
		}
		if err := s.Rollback(txc); !errors.Is(err, sql.ErrTxDone) {
			t.Errorf("Rollback after Commit: %v, want sql.ErrTxDone", err)
		}
		if !stored("committed") {
			t.Error("the committed token is not stored")
		}
	})

	t.Run("Commit after a failed Commit", func(t *testing.T) {
		req := tokenRequest(t, s, "r3", clock.Now())
		if err := s.DeleteClient(ctx, "grafana", ""); err != nil {
			t.Fatal(err)
		}
		txc, err := s.BeginTX(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAccessTokenSession(txc, "dropped", req); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(txc); !errors.Is(err, store.ErrClientGone) {
			t.Fatalf("the token of a deleted client: %v, want ErrClientGone", err)
		}
		if err := s.Commit(txc); !errors.Is(err, sql.ErrTxDone) {
			t.Errorf("second Commit after a failed one: %v, want sql.ErrTxDone", err)
		}
		// fosite rolls back after a failed Commit; an error would replace the
		// Commit's in the client's answer.
		if err := s.Rollback(txc); err != nil {
			t.Errorf("Rollback after a failed Commit: %v", err)
		}
		if stored("dropped") {
			t.Error("the token of a failed commit is stored")
		}
	})
}

// clientStore opens a store on a database of its own, on a test clock, holding the
// confidential client that client("secret") describes.
func clientStore(t *testing.T) (*postgres.Store, *storetest.Clock, string) {
	t.Helper()
	clock := storetest.NewClock()
	dsn := pg.NewMigratedDatabase(t)
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.PutClient(context.Background(), client("secret")); err != nil {
		t.Fatal(err)
	}
	return s, clock, dsn
}

// A COMMIT cut short is not answered as a success. With synchronous replication a
// COMMIT waits for the standby; when the batch's time runs out meanwhile, PostgreSQL
// cancels the wait, keeps the transaction committed locally and reports success, but
// the rows may not be on the standby, which a failover would promote. Here the
// standby never answers (synchronous_standby_names names one that never connects):
// the token and the refresh must both fail, though their rows are committed locally.
func TestGroupCommitCutShortIsNotAnswered(t *testing.T) {
	ctx := context.Background()
	primary := testpg.StalledStandby(t)
	dsn := primary.NewMigratedDatabase(t)
	clock := storetest.NewClock()
	setup, err := postgres.Open(ctx, dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = setup.Close() })
	if _, err := setup.PutClient(ctx, client("secret")); err != nil {
		t.Fatal(err)
	}
	req := tokenRequest(t, setup, "chain", clock.Now())
	if err := setup.CreateAccessTokenSession(ctx, "at-1", req); err != nil {
		t.Fatal(err)
	}
	if err := setup.CreateRefreshTokenSession(ctx, "rt-1", "at-1", req); err != nil {
		t.Fatal(err)
	}

	s, err := postgres.Open(ctx, dsn+" synchronous_commit=on", postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	postgres.SetGroupCommitTimeout(s, 300*time.Millisecond)
	if err := s.CreateAccessTokenSession(ctx, "cc-1", tokenRequest(t, s, "cc", clock.Now())); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("a token whose COMMIT was cut short: %v; want ErrUnavailable, not an answer", err)
	}
	if err := refreshInTx(ctx, s, "rt-1", "at-2", "rt-2", tokenRequest(t, s, "chain", clock.Now())); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("a refresh whose COMMIT was cut short: %v; want ErrUnavailable, not an answer", err)
	}
	// The case this is about: PostgreSQL committed both locally.
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM tokens WHERE signature IN ('cc-1', 'at-2', 'rt-2')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("%d of the 3 rows committed locally; the wait was not the COMMIT's", n)
	}
}

// A batch of rotations reads only the tokens it rotates and revokes, whatever the
// planner's statistics say. After ANALYZE ran while there were no refresh tokens (a
// new deployment, or a table of access tokens before the first refresh) the
// statistics call refresh tokens rare for minutes, and the plain form of the
// statement (kind = … AND signature = ANY(…)) then read every refresh token of the
// table in each batch: 10–35 ms per batch at 20,000 of them, growing with the table.
func TestRotationBatchFindsTokensByKeyWhateverTheStatistics(t *testing.T) {
	ctx := context.Background()
	s, _, dsn := clientStore(t)
	db := openDB(t, dsn)
	const refreshTokens = 5000
	for _, q := range []string{
		// No ANALYZE but the test's own, which would mend the statistics.
		`ALTER TABLE tokens SET (autovacuum_enabled = off)`,
		`INSERT INTO tokens (kind, signature, request_id, client_id, requested_at, session)
SELECT 'access_token', 'at-' || i, 'req-' || i, 'grafana', now(), '{}' FROM generate_series(1, 2000) i`,
		`ANALYZE tokens`,
		`INSERT INTO tokens (kind, signature, request_id, client_id, requested_at, session, access_signature)
SELECT 'refresh_token', 'rt-' || i, 'req-' || i, 'grafana', now(), '{}', 'at-' || i FROM generate_series(1, ` +
			strconv.Itoa(refreshTokens) + `) i`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	type node struct {
		NodeType        string  `json:"Node Type"`
		Operation       string  `json:"Operation"`
		Relation        string  `json:"Relation Name"`
		ActualRows      float64 `json:"Actual Rows"`
		ActualLoops     float64 `json:"Actual Loops"`
		RemovedByFilter float64 `json:"Rows Removed by Filter"` // per loop, as Actual Rows
		Plans           []node  `json:"Plans"`
	}
	var walk func(n node, f func(node))
	walk = func(n node, f func(node)) {
		f(n)
		for _, c := range n.Plans {
			walk(c, f)
		}
	}
	// One rotation, as an idle server writes it, and a batch whose last refresh
	// token's access token is gone already and which names one token twice.
	for _, sigs := range [][]string{{"rt-1500"}, {"rt-7", "rt-1999", "rt-4999", "rt-7"}} {
		raw, err := postgres.ExplainRotation(ctx, s, sigs)
		if err != nil {
			t.Fatal(err)
		}
		var plans []struct{ Plan node }
		if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
			t.Fatalf("EXPLAIN's JSON: %v\n%s", err, raw)
		}
		read, updated, deleted := 0.0, 0.0, 0.0
		walk(plans[0].Plan, func(n node) {
			switch {
			case n.NodeType == "ModifyTable" && n.Operation == "Update":
				updated += n.ActualRows
			case n.NodeType == "ModifyTable" && n.Operation == "Delete":
				deleted += n.ActualRows
			case n.Relation == "tokens" && strings.HasSuffix(n.NodeType, "Scan"):
				read += (n.ActualRows + n.RemovedByFilter) * n.ActualLoops
			}
		})
		distinct := float64(len(slices.Compact(slices.Sorted(slices.Values(sigs)))))
		withAccess := 0.0
		for _, sig := range slices.Compact(slices.Sorted(slices.Values(sigs))) {
			if n, _ := strconv.Atoi(strings.TrimPrefix(sig, "rt-")); n <= 2000 {
				withAccess++
			}
		}
		if updated != distinct || deleted != withAccess {
			t.Fatalf("rotating %v updated %.0f refresh tokens and deleted %.0f access tokens; want %.0f and %.0f\n%s",
				sigs, updated, deleted, distinct, withAccess, raw)
		}
		// Each token found by its key, and found again to be changed.
		if most := float64(2*len(sigs)) + 2*withAccess; read > most {
			t.Errorf("rotating %v of %d refresh tokens read %.0f rows of tokens; want at most %.0f\n%s",
				sigs, refreshTokens, read, most, raw)
		}
	}
}

// A refresh token that another batch rotates while this batch waits for its row is
// still rotated by this one, as the grace-period reuse it is; one that a revocation
// deletes meanwhile is missing from the count, so that the batch fails and no new
// pair is stored (see the rotation's comments in fosite.go).
func TestRotationBatchAfterAConcurrentRotationOrRevocation(t *testing.T) {
	ctx := context.Background()
	s, clock, dsn := clientStore(t)
	db := openDB(t, dsn)
	for _, chain := range []string{"a", "b", "c", "d"} {
		req := tokenRequest(t, s, "chain-"+chain, clock.Now())
		if err := s.CreateAccessTokenSession(ctx, "at-"+chain, req); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRefreshTokenSession(ctx, "rt-"+chain, "at-"+chain, req); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, meanwhile string
		sigs            []string
		wantRotated     int
		wantGone        []string
	}{
		{"rotated meanwhile", `UPDATE tokens SET active = false, rotated_at = now() WHERE kind = 'refresh_token' AND signature = 'rt-a'`,
			[]string{"rt-a", "rt-b"}, 2, []string{"at-b"}},
		{"revoked meanwhile", `DELETE FROM tokens WHERE kind = 'refresh_token' AND signature = 'rt-c'`,
			[]string{"rt-c", "rt-d"}, 1, []string{"at-d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = other.Rollback() }()
			if _, err := other.ExecContext(ctx, tc.meanwhile); err != nil {
				t.Fatal(err)
			}
			type result struct {
				rotated int
				gone    []string
				err     error
			}
			done := make(chan result, 1)
			go func() {
				rotated, gone, err := postgres.RotateInBatch(ctx, s, tc.sigs)
				done <- result{rotated, gone, err}
			}()
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				var waiting int
				if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
					t.Fatal(err)
				}
				if waiting == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the batch never waited for the other transaction's row")
				}
			}
			if err := other.Commit(); err != nil {
				t.Fatal(err)
			}
			got := <-done
			slices.Sort(got.gone)
			if got.err != nil || got.rotated != tc.wantRotated || !slices.Equal(got.gone, tc.wantGone) {
				t.Errorf("batch of %v: rotated %d, deleted access tokens %v, error %v; want %d, %v", tc.sigs,
					got.rotated, got.gone, got.err, tc.wantRotated, tc.wantGone)
			}
		})
	}
}
