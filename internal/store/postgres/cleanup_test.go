package postgres_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/store/storetest"
)

// upgradeLeftovers is what a Copy upgrade leaves in db: the capture and upgrade
// schemas, and the capture and fence triggers on its tables.
func upgradeLeftovers(t *testing.T, db *sql.DB) []string {
	t.Helper()
	return column(t, db, `SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname IN ('kubeoauth_capture', 'kubeoauth_upgrade')
UNION ALL SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass FROM pg_trigger WHERE tgname IN ('kubeoauth_capture', 'kubeoauth_fence')
ORDER BY 1`)
}

// After a copy and a cutover, the copy serves; CleanupUpgrade on it (and on it
// alone: the old database is dropped first, so the cleanup cannot lean on it)
// leaves no capture, fence or upgrade record there, and a token written then
// leaves no trace beside the token itself.
func TestCleanupAfterCopyAndCutover(t *testing.T) {
	ctx := context.Background()
	srcDSN, dstDSN := pg.NewMigratedDatabase(t), pg.NewDatabase(t)
	src, dst := openDB(t, srcDSN), openDB(t, dstDSN)
	blue, err := postgres.Open(ctx, srcDSN, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := blue.PutClient(ctx, client("secret")); err != nil {
		t.Fatal(err)
	}
	if err := blue.CreateAccessTokenSession(ctx, "at-blue", tokenRequest(t, blue, "req-blue", now)); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "c1", Migrations: postgres.Migrations()}); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.Cutover(ctx, src, dst, postgres.CutoverOptions{UpgradeID: "c1", Direction: postgres.DirectionForward,
		ForwardTo: "http://green", Drain: func(ctx context.Context) (int, error) {
			r, err := postgres.ReplayPass(ctx, src, dst, postgres.ReplayOptions{UpgradeID: "c1", Direction: postgres.DirectionForward,
				Migrations: postgres.Migrations()})
			return r.Replayed, err
		}}); err != nil {
		t.Fatal(err)
	}
	_ = blue.Close()

	green, err := postgres.Open(ctx, dstDSN, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = green.Close() }()
	// Before the cleanup, every token write on the serving copy pays a capture row
	// (for the backward replay), which nothing would ever delete.
	if err := green.CreateAccessTokenSession(ctx, "at-before", tokenRequest(t, green, "req-before", now)); err != nil {
		t.Fatal(err)
	}
	if got := column(t, dst, `SELECT count(*) FROM kubeoauth_capture.changes`); got[0] == "0" {
		t.Fatal("no capture row for a token written on the cut over copy: the test shows nothing")
	}
	if len(upgradeLeftovers(t, dst)) == 0 {
		t.Fatal("the cut over copy has no capture or fence: the test shows nothing")
	}

	// The old database goes away first (with a session still open on it).
	name, err := postgres.DatabaseName(srcDSN)
	if err != nil {
		t.Fatal(err)
	}
	if err := postgres.DropDatabase(ctx, dst, name); err != nil {
		t.Fatalf("drop the old database: %v", err)
	}
	if err := postgres.CleanupUpgrade(ctx, dst, postgres.CaptureOptions{LockTimeout: time.Second}); err != nil {
		t.Fatalf("CleanupUpgrade: %v", err)
	}
	if got := upgradeLeftovers(t, dst); len(got) != 0 {
		t.Errorf("after the cleanup: %v", got)
	}
	if err := green.CreateAccessTokenSession(ctx, "at-after", tokenRequest(t, green, "req-after", now)); err != nil {
		t.Fatalf("a token write after the cleanup: %v", err)
	}
	if _, err := green.GetAccessTokenSession(ctx, "at-before", &storetest.Session{}); err != nil {
		t.Errorf("a token of before the cleanup: %v", err)
	}
	if got := upgradeLeftovers(t, dst); len(got) != 0 {
		t.Errorf("after a token write: %v", got)
	}
	// Run again (a Job retried after it ended the work): nothing to do, no error.
	if err := postgres.CleanupUpgrade(ctx, dst, postgres.CaptureOptions{}); err != nil {
		t.Errorf("CleanupUpgrade again: %v", err)
	}
}

// A database dropped while a session is connected to it (a fenced pod on its
// way out, a replay killed mid-pass) goes: the session is ended.
func TestDropDatabaseWithAConnectionOpen(t *testing.T) {
	ctx := context.Background()
	victimDSN := pg.NewMigratedDatabase(t)
	other := openDB(t, pg.NewDatabase(t))
	victim := openDB(t, victimDSN)
	conn, err := victim.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO clients (id, spec) VALUES ('open', '{}')`); err != nil {
		t.Fatal(err)
	}
	name, err := postgres.DatabaseName(victimDSN)
	if err != nil {
		t.Fatal(err)
	}
	if err := postgres.DropDatabase(ctx, other, name); err != nil {
		t.Fatalf("DropDatabase with a session open on it: %v", err)
	}
	if got := column(t, other, `SELECT count(*) FROM pg_database WHERE datname = '`+name+`'`); got[0] != "0" {
		t.Errorf("database %s still exists", name)
	}
	if err := tx.Commit(); err == nil {
		t.Error("the open transaction on the dropped database committed")
	}
	if err := postgres.DropDatabase(ctx, other, name); err != nil {
		t.Errorf("DropDatabase of a database already gone: %v", err)
	}
}
