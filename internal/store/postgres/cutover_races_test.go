package postgres_test

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// A write that passed the guard while the marker was committing — so it holds no
// transaction id yet when the marker's snapshot is taken, and no snapshot lists it
// — commits after the marker: the cutover waits for it and replays it before it
// lets the new side serve. Waiting on transaction ids instead lost it.
func TestCutoverWaitsForAWriterThatPassedTheGuardLate(t *testing.T) {
	ctx := context.Background()
	from, to := fenceDB(t, pg.NewMigratedDatabase(t)), fenceDB(t, pg.NewMigratedDatabase(t))
	r := newTestReplay(t, from, to)
	if err := postgres.InstallFence(ctx, from, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	// The marker's commit made slow after its UPDATE, so that a writer fits between.
	if _, err := from.Exec(`CREATE FUNCTION public.slow_marker() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END$$;
CREATE TRIGGER slow_marker AFTER UPDATE ON kubeoauth_upgrade.fence FOR EACH ROW
WHEN (NEW.state = 'cut_over') EXECUTE FUNCTION public.slow_marker()`); err != nil {
		t.Fatal(err)
	}
	opts := postgres.CutoverOptions{UpgradeID: "u1", Direction: postgres.DirectionForward, ForwardTo: "http://green", Drain: r.drain}
	done := make(chan error, 1)
	go func() {
		_, err := postgres.Cutover(ctx, from, to, opts)
		done <- err
	}()
	waitUntil(t, from, `SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'PgSleep'`, "the marker committing")
	late, err := from.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = late.Rollback() }()
	if _, err := late.Exec(`INSERT INTO clients (id, spec) VALUES ('late', '{}')`); err != nil {
		t.Fatalf("a write before the marker committed: %v; want it through (the fence still held)", err)
	}
	select {
	case err := <-done:
		t.Fatalf("the cutover ended (%v) while a write that passed the guard was still open", err)
	case <-time.After(time.Second):
	}
	if err := late.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := column(t, to, `SELECT id FROM clients WHERE id = 'late'`); len(got) != 1 {
		t.Error("a write that committed after the marker is not on the side that serves now: lost")
	}
}

// waitUntil polls a boolean query on db, for at most 15 s.
func waitUntil(t *testing.T, db *sql.DB, query, what string) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var ok bool
		if err := db.QueryRow(query).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
	}
	t.Fatalf("%s: not within 15s", what)
}

// The copy of a real database, fenced from the start: its servers forward to the
// serving side, the guard refuses any write but the replay's, until the cutover
// takes the fence away. After the cutover a forward replayer that outlived it does
// nothing: a client the new side deleted is not brought back from the old side,
// where the replay back had carried it.
func TestCopyIsFencedAndReplayStopsAtItsCutover(t *testing.T) {
	ctx := context.Background()
	blue, green := fenceDB(t, pg.NewMigratedDatabase(t)), fenceDB(t, pg.NewDatabase(t))
	if _, err := blue.Exec(`INSERT INTO clients (id, spec) VALUES ('a', '{}')`); err != nil {
		t.Fatal(err)
	}
	ms := postgres.Migrations()
	if _, err := postgres.CopyDatabase(ctx, blue, green, postgres.CopyOptions{UpgradeID: "real", Migrations: ms,
		ForwardTo: "http://blue"}); err != nil {
		t.Fatal(err)
	}
	if f, ok, err := postgres.ReadFence(ctx, green); err != nil || !ok || f.State != postgres.FenceForwarding || f.ForwardTo != "http://blue" {
		t.Fatalf("the copy's fence: %+v %v %v; want forwarding to the serving side", f, ok, err)
	}
	if _, err := green.Exec(`INSERT INTO clients (id, spec) VALUES ('direct', '{}')`); !fenceRefused(err) {
		t.Fatalf("a write straight onto the copy before the cutover: %v; want refused", err)
	}
	if _, err := blue.Exec(`INSERT INTO clients (id, spec) VALUES ('b', '{}')`); err != nil {
		t.Fatal(err)
	}
	forward := postgres.ReplayOptions{UpgradeID: "real", Direction: postgres.DirectionForward, Migrations: ms}
	if res, err := postgres.ReplayPass(ctx, blue, green, forward); err != nil || res.Replayed != 1 {
		t.Fatalf("a replay pass onto the fenced copy: %+v, %v; want the one client", res, err)
	}
	if _, err := postgres.Cutover(ctx, blue, green, postgres.CutoverOptions{UpgradeID: "real", Direction: postgres.DirectionForward,
		ForwardTo: "http://green", Drain: func(ctx context.Context) (int, error) {
			res, err := postgres.ReplayPass(ctx, blue, green, forward)
			return res.Replayed, err
		}}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := postgres.ReadFence(ctx, green); err != nil || ok {
		t.Fatalf("the copy's fence after the cutover: %v %v; want none (it serves)", ok, err)
	}
	if _, err := green.Exec(`INSERT INTO clients (id, spec) VALUES ('c', '{}')`); err != nil {
		t.Fatalf("a write on the new side after the cutover: %v", err)
	}
	backward := postgres.ReplayOptions{UpgradeID: "real", Direction: postgres.DirectionBackward, Migrations: ms}
	if res, err := postgres.ReplayPass(ctx, green, blue, backward); err != nil || res.Replayed != 1 {
		t.Fatalf("the replay back: %+v, %v; want client c", res, err)
	}
	if _, err := green.Exec(`DELETE FROM clients WHERE id = 'c'`); err != nil {
		t.Fatal(err)
	}
	res, err := postgres.ReplayPass(ctx, blue, green, forward)
	if err != nil || !res.CutOver || res.Replayed != 0 {
		t.Errorf("a forward pass after its cutover: %+v, %v; want nothing done, CutOver", res, err)
	}
	if got := column(t, green, `SELECT id FROM clients ORDER BY id`); strings.Join(got, ",") != "a,b" {
		t.Errorf("the new side's clients: %v; want a,b (c deleted there stays deleted)", got)
	}
}

// A replay pass drops the changes it is done with from the source's changes table,
// so that the table does not grow for as long as an upgrade lasts; what it keeps
// is still replayed by the next pass.
func TestReplayTrimsTheChangesItReplayed(t *testing.T) {
	ctx := context.Background()
	blue, green := fenceDB(t, pg.NewMigratedDatabase(t)), fenceDB(t, pg.NewDatabase(t))
	ms := postgres.Migrations()
	if _, err := postgres.CopyDatabase(ctx, blue, green, postgres.CopyOptions{UpgradeID: "trim", Migrations: ms}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := blue.Exec(`INSERT INTO clients (id, spec) VALUES ($1, '{}')`, "c"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := column(t, blue, `SELECT count(*) FROM kubeoauth_capture.changes`); got[0] != "20" {
		t.Fatalf("changes before the pass: %v; want 20", got)
	}
	forward := postgres.ReplayOptions{UpgradeID: "trim", Direction: postgres.DirectionForward, Migrations: ms}
	if res, err := postgres.ReplayPass(ctx, blue, green, forward); err != nil || res.Replayed != 20 {
		t.Fatalf("the pass: %+v %v", res, err)
	}
	if got := column(t, blue, `SELECT count(*) FROM kubeoauth_capture.changes`); got[0] != "0" {
		t.Errorf("changes after the pass: %v; want none left", got)
	}
	if _, err := blue.Exec(`DELETE FROM clients WHERE id = 'c3'`); err != nil {
		t.Fatal(err)
	}
	if res, err := postgres.ReplayPass(ctx, blue, green, forward); err != nil || res.Replayed != 1 {
		t.Fatalf("the next pass: %+v %v; want the delete", res, err)
	}
	if got := column(t, green, `SELECT count(*) FROM clients`); got[0] != "19" {
		t.Errorf("clients on the copy: %v; want 19", got)
	}
}
