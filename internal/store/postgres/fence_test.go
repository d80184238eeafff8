package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// fenceDB opens a pool on dsn for the test.
func fenceDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := postgres.OpenDB(dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// fenceRefused tells whether err is the guard's refusal.
func fenceRefused(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && pe.Code == postgres.FenceRefused && pe.Message == postgres.FenceRefusedMessage
}

func setFenceRow(t *testing.T, db *sql.DB, state string, lease time.Duration) {
	t.Helper()
	if _, err := db.Exec(`INSERT INTO kubeoauth_upgrade.fence (id, upgrade_id, state, lease_until, forward_to)
VALUES (1, 'test', $1, now() + make_interval(secs => $2), 'http://green')
ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, lease_until = EXCLUDED.lease_until`, state, lease.Seconds()); err != nil {
		t.Fatal(err)
	}
}

// The guard refuses a token server's write with its documented error once the
// database is cut over or forwarding, and only then: while holding (requests in
// flight finish) and for the replayer (SET LOCAL kubeoauth.replay) writes pass.
// ReadFence sees the row as the servers act on it, with the lease by the database's
// clock, and no fence at all before the install and after the uninstall. The
// guard is installed by a role that only owns the tables.
func TestFenceGuardRefusesWritesOnceCutOver(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	owner := fenceDB(t, tableOwner(t, dsn))
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	readFence := func() (postgres.Fence, bool) {
		t.Helper()
		f, ok, err := s.ReadFence(ctx)
		if err != nil {
			t.Fatalf("ReadFence: %v", err)
		}
		return f, ok
	}
	if _, ok := readFence(); ok {
		t.Fatal("ReadFence found a fence before any was installed")
	}
	for range 2 { // the second install finds everything there
		if err := postgres.InstallFence(ctx, owner, postgres.CaptureOptions{}); err != nil {
			t.Fatalf("InstallFence as the tables' owner: %v", err)
		}
	}
	if n := column(t, owner, `SELECT count(*) FROM pg_trigger WHERE tgname = 'kubeoauth_fence'`); n[0] != "6" {
		t.Fatalf("%s guard triggers; want one on each of the 6 token server tables", n[0])
	}
	if _, ok := readFence(); ok {
		t.Fatal("ReadFence found a fence with an empty fence table")
	}
	put := func(id string) error {
		c := client("secret")
		c.ID = id
		_, err := s.PutClient(ctx, c)
		return err
	}
	if err := put("before"); err != nil {
		t.Fatalf("a write with the guard installed and no fence: %v", err)
	}

	setFenceRow(t, owner, postgres.FenceHolding, time.Hour)
	if f, ok := readFence(); !ok || f != (postgres.Fence{UpgradeID: "test", State: postgres.FenceHolding, LeaseLive: true, ForwardTo: "http://green"}) {
		t.Fatalf("ReadFence while holding = %+v, %v", f, ok)
	}
	if err := put("holding"); err != nil {
		t.Fatalf("a write while holding: %v; want it to pass (requests in flight finish)", err)
	}
	setFenceRow(t, owner, postgres.FenceHolding, -time.Second)
	if f, ok := readFence(); !ok || f.LeaseLive {
		t.Fatalf("ReadFence with the lease over = %+v, %v; want LeaseLive false", f, ok)
	}

	for _, state := range []string{postgres.FenceCutOver, postgres.FenceForwarding} {
		setFenceRow(t, owner, state, time.Hour)
		err := put("refused-" + state)
		if !fenceRefused(err) {
			t.Fatalf("a write while %s: %v; want SQLSTATE %s %q", state, err, postgres.FenceRefused, postgres.FenceRefusedMessage)
		}
		// Every kind of statement, on every table, by any role.
		for _, stmt := range []string{`UPDATE clients SET updated_at = now()`, `DELETE FROM tokens`,
			`INSERT INTO events (kind) VALUES ('x')`} {
			if _, err := owner.Exec(stmt); !fenceRefused(err) {
				t.Errorf("%s while %s: %v; want refused", stmt, state, err)
			}
		}
		tx, err := owner.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`SET LOCAL kubeoauth.replay = 'on'`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO clients (id, spec) VALUES ($1, '{}')`, "replayed-"+state); err != nil {
			t.Fatalf("the replayer's write while %s: %v", state, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		// SET LOCAL ended with its transaction: the pool's next write is refused again.
		if _, err := owner.Exec(`DELETE FROM clients WHERE id = $1`, "replayed-"+state); !fenceRefused(err) {
			t.Errorf("a write after the replayer's transaction while %s: %v; want refused", state, err)
		}
	}
	got := column(t, owner, `SELECT id FROM clients ORDER BY id`)
	if want := []string{"before", "holding", "replayed-cut_over", "replayed-forwarding"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("clients %v; want %v", got, want)
	}

	if err := postgres.UninstallFence(ctx, owner, postgres.CaptureOptions{}); err != nil {
		t.Fatalf("UninstallFence: %v", err)
	}
	if n := column(t, owner, `SELECT count(*) FROM pg_trigger WHERE tgname = 'kubeoauth_fence'`); n[0] != "0" {
		t.Errorf("%s guard triggers after UninstallFence", n[0])
	}
	if n := column(t, owner, `SELECT count(*) FROM pg_namespace WHERE nspname = 'kubeoauth_upgrade'`); n[0] != "0" {
		t.Errorf("the kubeoauth_upgrade schema is still there after UninstallFence")
	}
	if _, ok := readFence(); ok {
		t.Error("ReadFence found a fence after UninstallFence")
	}
	if err := put("after"); err != nil {
		t.Errorf("a write after UninstallFence: %v", err)
	}
}

// testReplay stands for the replay (ReplayPass) in the cutover's tests: it carries
// the rows of clients and events changed on from since its last pass (capture's
// windows) to to, by key, through the guard as the replayer does. It records
// what it saw of from's fence at each pass, for the tests of the ordering.
type testReplay struct {
	from, to *sql.DB
	mu       sync.Mutex
	since    string
	passes   []drainPass
	// before, when set, runs at the start of each pass; an error ends the pass.
	before func(ctx context.Context) error
}

type drainPass struct {
	fence    string // from's fence state when the pass began
	replayed int
}

func newTestReplay(t *testing.T, from, to *sql.DB) *testReplay {
	t.Helper()
	ctx := context.Background()
	if err := postgres.InstallCapture(ctx, from, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	since, err := postgres.Snapshot(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	return &testReplay{from: from, to: to, since: since}
}

func (r *testReplay) drain(ctx context.Context) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.before != nil {
		if err := r.before(ctx); err != nil {
			return 0, err
		}
	}
	f, _, err := postgres.ReadFence(ctx, r.from)
	if err != nil {
		return 0, err
	}
	until, err := postgres.Snapshot(ctx, r.from)
	if err != nil {
		return 0, err
	}
	changes, err := postgres.ChangesBetween(ctx, r.from, r.since, until, 0, 1_000_000)
	if err != nil {
		return 0, err
	}
	tx, err := r.to.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SET LOCAL kubeoauth.replay = 'on'`); err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for _, c := range changes {
		if c.Table != "clients" && c.Table != "events" {
			return 0, fmt.Errorf("a change of %s: the test replay carries clients and events only", c.Table)
		}
		if k := c.Table + string(c.Key); seen[k] {
			continue
		} else {
			seen[k] = true
		}
		// #nosec G201 -- two known table names.
		var row sql.NullString
		if err := r.from.QueryRowContext(ctx, fmt.Sprintf(`SELECT row_to_json(t)::text FROM %s t WHERE to_jsonb(t) @> $1::jsonb`, c.Table),
			string(c.Key)).Scan(&row); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`DELETE FROM %s t WHERE to_jsonb(t) @> $1::jsonb`, c.Table), string(c.Key)); err != nil {
			return 0, err
		}
		if row.Valid {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`INSERT INTO %[1]s SELECT * FROM json_populate_record(NULL::%[1]s, $1::json)`, c.Table),
				row.String); err != nil {
				return 0, err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	r.since = until
	r.passes = append(r.passes, drainPass{fence: f.State, replayed: len(seen)})
	return len(seen), nil
}

// writer writes on from until stopped, one client and one event per transaction,
// and records what committed and what the guard refused. A fenced writer acts as a
// token server: it looks at the fence every 100 ms, holds its writes while the
// fence holds or is cut over, and stops once from forwards; so it writes on for
// up to 100 ms after the fence is raised, like the requests in flight then. A
// stray one does not look (a write that slipped through) and writes every
// `every`.
type writer struct {
	name      string
	committed []string
	// holding counts the commits made after the fence was raised.
	holding  int
	refused  atomic.Int64
	firstErr error
	wait     func()
}

func write(ctx context.Context, db *sql.DB, name string, fenced bool, every time.Duration, stop <-chan struct{}) *writer {
	w := &writer{name: name}
	done := make(chan struct{})
	var seen atomic.Value
	seen.Store(postgres.Fence{})
	if fenced {
		poll, cancel := context.WithCancel(ctx)
		go func() {
			<-done
			cancel()
		}()
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				if f, _, err := postgres.ReadFence(poll, db); err == nil {
					seen.Store(f)
				}
				select {
				case <-poll.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			switch f := seen.Load().(postgres.Fence); {
			case f.State == postgres.FenceForwarding:
				return
			case f.State == postgres.FenceCutOver || f.State == postgres.FenceHolding && f.LeaseLive:
				continue
			}
			id := fmt.Sprintf("%s%05d", w.name, i)
			var state string
			err := func() error {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				defer func() { _ = tx.Rollback() }()
				if _, err := tx.ExecContext(ctx, `INSERT INTO clients (id, spec) VALUES ($1, '{}')`, id); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO events (kind, client_id) VALUES ('test', $1)`, id); err != nil {
					return err
				}
				f, _, err := postgres.ReadFence(ctx, tx)
				if err != nil {
					return err
				}
				state = f.State
				return tx.Commit()
			}()
			switch {
			case err == nil:
				w.committed = append(w.committed, id)
				if state == postgres.FenceHolding {
					w.holding++
				}
			case fenceRefused(err):
				w.refused.Add(1)
			default:
				w.firstErr = err
				return
			}
		}
	}()
	w.wait = func() { <-done }
	return w
}

// Cutover under a steady stream of writes on from: writes go on while the fence
// holds and are drained before the marker; once it is committed the guard refuses
// every write, so everything that committed on from is on to and nothing is left
// behind; to's event sequence is past from's; the replay back starts from a
// snapshot of to taken before to took any write; to's own fence is gone (its
// servers serve) and from forwards.
func TestCutoverDrainsThenSwitches(t *testing.T) {
	ctx := context.Background()
	from, to := fenceDB(t, pg.NewMigratedDatabase(t)), fenceDB(t, pg.NewMigratedDatabase(t))
	r := newTestReplay(t, from, to)
	// to's own fence, left by the cutover that made it the old side (a rollback
	// cuts back to it): this cutover lifts it.
	if err := postgres.InstallFence(ctx, to, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	setFenceRow(t, to, postgres.FenceForwarding, 0)

	stop := make(chan struct{})
	server := write(ctx, from, "s", true, 2*time.Millisecond, stop)
	stray := write(ctx, from, "x", false, 50*time.Millisecond, stop)
	// The writers have written before the cutover starts.
	for deadline := time.Now().Add(10 * time.Second); len(column(t, from, `SELECT id FROM clients WHERE id LIKE 'x%' LIMIT 2`)) < 2; {
		if time.Now().After(deadline) {
			t.Fatal("the writers wrote nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var logs []string
	res, err := postgres.Cutover(ctx, from, to, postgres.CutoverOptions{UpgradeID: "u1", Direction: postgres.DirectionForward,
		ForwardTo: "http://green:4444", Drain: r.drain, Log: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatalf("Cutover: %v\n%s", err, strings.Join(logs, "\n"))
	}
	// The stray writer meets the guard a few more times; the server's stopped by
	// itself when it saw from forwarding.
	server.wait()
	for deadline := time.Now().Add(10 * time.Second); stray.refused.Load() < 3; {
		if time.Now().After(deadline) {
			close(stop)
			stray.wait()
			t.Fatalf("the stray writer was refused %d times after the cutover (%v)", stray.refused.Load(), stray.firstErr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	stray.wait()
	committed := append(append([]string{}, server.committed...), stray.committed...)
	t.Logf("cutover: %+v; writes committed on from: %d by the server (%d after the fence), %d stray (%d after the fence, "+
		"%d refused); passes %+v\n%s", res, len(server.committed), server.holding, len(stray.committed), stray.holding,
		stray.refused.Load(), r.passes, strings.Join(logs, "\n"))
	for _, w := range []*writer{server, stray} {
		if w.firstErr != nil {
			t.Fatalf("writer %s: %v", w.name, w.firstErr)
		}
	}
	if server.refused.Load() != 0 {
		t.Errorf("the guard refused %d writes of the writer that holds while fenced; want none", server.refused.Load())
	}
	if server.holding+stray.holding == 0 {
		t.Error("no write committed while the fence was holding; the test proves nothing about draining them")
	}
	if res.Resumed || res.FenceHold <= 0 || res.Replayed == 0 {
		t.Errorf("result %+v; want not resumed, a fence hold, rows replayed", res)
	}

	// Drained: to has exactly what committed on from, and from took nothing after
	// the last drain.
	fromClients := column(t, from, `SELECT id FROM clients ORDER BY id`)
	toClients := column(t, to, `SELECT id FROM clients ORDER BY id`)
	sort.Strings(committed)
	if strings.Join(fromClients, ",") != strings.Join(committed, ",") {
		t.Errorf("from has %d clients, the writers committed %d", len(fromClients), len(committed))
	}
	if strings.Join(toClients, ",") != strings.Join(fromClients, ",") {
		t.Errorf("to has %d clients, from %d: the cutover left writes behind", len(toClients), len(fromClients))
	}
	// Ordering: passes while holding replayed the writes made while holding, the
	// last pass before the marker replayed nothing, and once cut over nothing new.
	var holdingPasses, cutPasses int
	for i, p := range r.passes {
		switch p.fence {
		case postgres.FenceHolding:
			holdingPasses++
			if i+1 < len(r.passes) && r.passes[i+1].fence == postgres.FenceCutOver && p.replayed != 0 {
				t.Errorf("pass %d, the last before the marker, replayed %d; want 0", i, p.replayed)
			}
		case postgres.FenceCutOver:
			cutPasses++
		default:
			t.Errorf("pass %d ran with from's fence %q", i, p.fence)
		}
	}
	if holdingPasses == 0 || cutPasses == 0 || r.passes[len(r.passes)-1].replayed != 0 {
		t.Errorf("passes %+v; want drains while holding, then after the marker until one replays nothing", r.passes)
	}

	// Sequences: a new event on to gets a number from never gave.
	var fromMax, toNext int64
	if err := from.QueryRow(`SELECT max(seq) FROM events`).Scan(&fromMax); err != nil {
		t.Fatal(err)
	}
	if err := to.QueryRow(`INSERT INTO events (kind) VALUES ('on to') RETURNING seq`).Scan(&toNext); err != nil {
		t.Fatalf("an event on to after the cutover: %v", err)
	}
	if toNext <= fromMax {
		t.Errorf("a new event on to got seq %d; from's last is %d", toNext, fromMax)
	}

	// The replay back: its row on from, since a snapshot of to that does not see
	// to's first write after the cutover.
	var since string
	var schemaFrom, schemaTo int
	if err := from.QueryRow(`SELECT since, schema_from, schema_to FROM kubeoauth_upgrade.replay
WHERE upgrade_id = 'u1' AND direction = 'backward'`).Scan(&since, &schemaFrom, &schemaTo); err != nil {
		t.Fatalf("the replay-back row on from: %v", err)
	}
	latest := postgres.Migrations()[len(postgres.Migrations())-1].Version
	if schemaFrom != latest || schemaTo != latest {
		t.Errorf("replay-back schemas %d→%d; want %d→%d", schemaFrom, schemaTo, latest, latest)
	}
	changes, err := postgres.ChangesBetween(ctx, to, since, mustSnapshot(t, to), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Table != "events" {
		t.Errorf("changes on to since the replay-back row's snapshot: %+v; want the one event written after the cutover", changes)
	}

	// The markers and the fences.
	if f, ok, err := postgres.ReadFence(ctx, from); err != nil || !ok ||
		f.UpgradeID != "u1" || f.State != postgres.FenceForwarding || f.ForwardTo != "http://green:4444" {
		t.Errorf("from's fence %+v, %v, %v; want forwarding to http://green:4444", f, ok, err)
	}
	if f, ok, err := postgres.ReadFence(ctx, to); err != nil || ok {
		t.Errorf("to's fence %+v, %v, %v; want none", f, ok, err)
	}
	if got := column(t, to, `SELECT upgrade_id || ' ' || direction FROM kubeoauth_upgrade.cutover`); strings.Join(got, ",") != "u1 forward" {
		t.Errorf("to's cutover markers %v; want u1 forward", got)
	}
}

func mustSnapshot(t *testing.T, db *sql.DB) string {
	t.Helper()
	s, err := postgres.Snapshot(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A cutover whose drain never reaches zero gives up at the lease with
// ErrLeaseExpired and lifts the fence; one whose process hangs (or dies) before the
// marker leaves a fence whose lease runs out by the database's clock, so the
// servers resume on their own, and its marker is refused even if it wakes up
// later. Nothing is marked on to either way, and from takes writes again.
func TestCutoverLeaseRunsOut(t *testing.T) {
	ctx := context.Background()
	from, to := fenceDB(t, pg.NewMigratedDatabase(t)), fenceDB(t, pg.NewMigratedDatabase(t))
	const lease = time.Second
	notMarked := func(t *testing.T) {
		t.Helper()
		if got := column(t, to, `SELECT count(*) FROM kubeoauth_upgrade.cutover`); got[0] != "0" {
			t.Errorf("%s cutover markers on to; want none", got[0])
		}
		if got := column(t, from, `SELECT count(*) FROM kubeoauth_upgrade.replay`); got[0] != "0" {
			t.Errorf("%s replay rows on from; want none", got[0])
		}
		if _, err := from.Exec(`INSERT INTO clients (id, spec) VALUES ($1, '{}')`, t.Name()); err != nil {
			t.Errorf("a write on from after the lease: %v", err)
		}
	}

	t.Run("drain never reaches zero", func(t *testing.T) {
		passes := 0
		start := time.Now()
		_, err := postgres.Cutover(ctx, from, to, postgres.CutoverOptions{UpgradeID: "u1", Direction: postgres.DirectionForward,
			ForwardTo: "http://green", Lease: lease, Drain: func(ctx context.Context) (int, error) {
				passes++
				select { // a pass that always finds something
				case <-ctx.Done():
					return 0, ctx.Err()
				case <-time.After(20 * time.Millisecond):
					return 1, nil
				}
			}})
		took := time.Since(start)
		t.Logf("gave up after %s, %d passes: %v", took, passes, err)
		if !errors.Is(err, postgres.ErrLeaseExpired) {
			t.Fatalf("Cutover: %v; want ErrLeaseExpired", err)
		}
		if took < lease || took > lease+5*time.Second {
			t.Errorf("gave up after %s; want just after the %s lease", took, lease)
		}
		if f, ok, err := postgres.ReadFence(ctx, from); ok || err != nil {
			t.Errorf("from's fence after giving up: %+v, %v; want it lifted", f, err)
		}
		notMarked(t)
	})

	t.Run("process hangs before the marker", func(t *testing.T) {
		release := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			_, err := postgres.Cutover(ctx, from, to, postgres.CutoverOptions{UpgradeID: "u2", Direction: postgres.DirectionForward,
				ForwardTo: "http://green", Lease: lease, Drain: func(context.Context) (int, error) {
					<-release // stuck, deaf to its context: a process stopped or cut off
					return 0, nil
				}})
			done <- err
		}()
		// The servers see the fence, then its lease run out, with the cutover still stuck.
		var held, resumed time.Time
		for deadline := time.Now().Add(lease + 10*time.Second); resumed.IsZero(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("from's fence: held since %v, never resumed", held)
			}
			f, ok, err := postgres.ReadFence(ctx, from)
			switch {
			case err != nil:
				t.Fatal(err)
			case ok && f.UpgradeID == "u2" && f.State == postgres.FenceHolding && f.LeaseLive && held.IsZero():
				held = time.Now()
			case ok && f.UpgradeID == "u2" && f.State == postgres.FenceHolding && !f.LeaseLive && !held.IsZero():
				resumed = time.Now()
			case ok && f.State != postgres.FenceHolding:
				t.Fatalf("from's fence %+v while the cutover is stuck before its marker", f)
			}
		}
		t.Logf("the servers held for %s and resumed on their own", resumed.Sub(held))
		close(release)
		if err := <-done; !errors.Is(err, postgres.ErrLeaseExpired) {
			t.Fatalf("the stuck cutover, woken after its lease: %v; want ErrLeaseExpired (the marker refused)", err)
		}
		notMarked(t)
	})
}

// A cutover killed after its marker leaves from refusing writes and its servers
// holding; run again, it resumes where it was: it waits for the transaction that
// passed the guard before the marker and committed after it, carries that write
// over, and completes.
func TestCutoverResumesAfterTheMarker(t *testing.T) {
	ctx := context.Background()
	from, to := fenceDB(t, pg.NewMigratedDatabase(t)), fenceDB(t, pg.NewMigratedDatabase(t))
	r := newTestReplay(t, from, to)
	// Installed ahead, as an earlier run would have: the transaction below would
	// keep the guard's CREATE TRIGGER waiting.
	if err := postgres.InstallFence(ctx, from, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	// A write in flight when the fence goes up, committed only after the marker.
	inflight, err := from.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = inflight.Rollback() }()
	if _, err := inflight.Exec(`INSERT INTO clients (id, spec) VALUES ('inflight', '{}')`); err != nil {
		t.Fatal(err)
	}
	if _, err := from.Exec(`INSERT INTO clients (id, spec) VALUES ('before', '{}')`); err != nil {
		t.Fatal(err)
	}
	opts := postgres.CutoverOptions{UpgradeID: "u1", Direction: postgres.DirectionForward, ForwardTo: "http://green", Drain: r.drain}
	killed, kill := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := postgres.Cutover(killed, from, to, opts)
		done <- err
	}()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cutover never committed its marker")
		}
		if f, _, err := postgres.ReadFence(ctx, from); err != nil {
			t.Fatal(err)
		} else if f.State == postgres.FenceCutOver {
			break
		}
	}
	// It waits for the transaction in flight; killed there.
	kill()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the killed cutover: %v", err)
	}
	if err := inflight.Commit(); err != nil {
		t.Fatalf("the transaction that passed the guard before the marker: %v", err)
	}
	if _, err := from.Exec(`INSERT INTO clients (id, spec) VALUES ('after', '{}')`); !fenceRefused(err) {
		t.Fatalf("a write on from after the marker: %v; want refused", err)
	}
	if f, ok, err := postgres.ReadFence(ctx, from); err != nil || !ok || f.State != postgres.FenceCutOver {
		t.Fatalf("from's fence with the cutover dead after its marker: %+v, %v; want cut_over (its servers go on holding)", f, err)
	}
	if got := column(t, to, `SELECT id FROM clients ORDER BY id`); strings.Join(got, ",") != "before" {
		t.Fatalf("to's clients before the rerun: %v", got)
	}

	res, err := postgres.Cutover(ctx, from, to, opts)
	if err != nil {
		t.Fatalf("the rerun: %v", err)
	}
	if !res.Resumed {
		t.Errorf("the rerun: %+v; want Resumed", res)
	}
	if got := column(t, to, `SELECT id FROM clients ORDER BY id`); strings.Join(got, ",") != "before,inflight" {
		t.Errorf("to's clients after the rerun: %v; want before,inflight", got)
	}
	if f, _, err := postgres.ReadFence(ctx, from); err != nil || f.State != postgres.FenceForwarding {
		t.Errorf("from's fence after the rerun: %+v, %v; want forwarding", f, err)
	}
	if got := column(t, to, `SELECT upgrade_id || ' ' || direction FROM kubeoauth_upgrade.cutover`); strings.Join(got, ",") != "u1 forward" {
		t.Errorf("to's cutover markers %v; want u1 forward", got)
	}
	since := column(t, from, `SELECT since FROM kubeoauth_upgrade.replay WHERE upgrade_id = 'u1' AND direction = 'backward'`)
	// A third run changes nothing, the replay back's start included.
	if res, err := postgres.Cutover(ctx, from, to, opts); err != nil || !res.Resumed {
		t.Fatalf("a third run: %+v, %v", res, err)
	}
	if again := column(t, from, `SELECT since FROM kubeoauth_upgrade.replay WHERE upgrade_id = 'u1' AND direction = 'backward'`); len(since) != 1 || again[0] != since[0] {
		t.Errorf("the replay back's since moved from %v to %v on a rerun: what to took in between would be lost", since, again)
	}
}
