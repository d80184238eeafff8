package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// lockedTokens is a fresh database where a long transaction (a pg_dump, a report)
// ran hold on tokens and stays open, holding its lock, for the tests of schema
// changes that must wait for such a lock without stalling token writes.
type lockedTokens struct {
	store   *postgres.Store
	db      *sql.DB
	blocker *sql.Tx
}

func lockTokens(t *testing.T, hold string) lockedTokens {
	t.Helper()
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.PutClient(ctx, client("secret")); err != nil {
		t.Fatal(err)
	}
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	blocker, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = blocker.Rollback() })
	if _, err := blocker.ExecContext(ctx, hold); err != nil {
		t.Fatal(err)
	}
	return lockedTokens{store: s, db: db, blocker: blocker}
}

// retrying runs change, its log into a channel, and waits until check says a line
// shows it timed out on its lock and retries (an error: a line it must not log).
// It returns the change's outcome, to come.
func (l lockedTokens) retrying(t *testing.T, bounded context.Context, what string,
	change func(log func(string, ...any)) error, check func(line string) (retried bool, err error)) <-chan error {
	t.Helper()
	retried := make(chan string, 1000)
	done := make(chan error, 1)
	go func() { done <- change(func(format string, args ...any) { retried <- fmt.Sprintf(format, args...) }) }()
	for {
		select {
		case line := <-retried:
			ok, err := check(line)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if ok {
				return done
			}
		case err := <-done:
			t.Fatalf("%s ended (%v) while the long transaction still holds its lock", what, err)
		case <-bounded.Done():
			t.Fatalf("%s waited for its lock and never gave up", what)
		}
	}
}

// writesGoOn writes tokens while the change keeps retrying, then ends the long
// transaction and waits for the change to go through.
func (l lockedTokens) writesGoOn(t *testing.T, done <-chan error, what string) {
	t.Helper()
	for i := range 10 {
		wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := l.store.CreateAccessTokenSession(wctx, fmt.Sprintf("at-%d", i),
			tokenRequest(t, l.store, fmt.Sprintf("req-%d", i), time.Now()))
		cancel()
		if err != nil {
			t.Fatalf("token write %d while %s waits for its lock: %v", i, what, err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("%s ended (%v) while the long transaction still holds its lock", what, err)
	default:
	}
	if err := l.blocker.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("%s after the long transaction ended: %v", what, err)
	}
	var lockTimeout string
	if err := l.db.QueryRowContext(context.Background(), `SHOW lock_timeout`).Scan(&lockTimeout); err != nil || lockTimeout != "0" {
		t.Errorf("a pooled connection after %s has lock_timeout %q (%v); the timeout leaked", what, lockTimeout, err)
	}
}
