package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/store/storetest"
)

// shop is people() with two more tables of awkward types: badges, a child of people
// (ON DELETE CASCADE) with an array, a jsonb, a bytea, a timestamp and a numeric, and
// log, keyed by a bigserial. 0002 (breaking) splits people.full_name.
func shop() []postgres.Migration {
	ms := people()
	ms[0].SQL += `;
CREATE TABLE badges (id text PRIMARY KEY, person_id text NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    tags text[] NOT NULL DEFAULT '{}', data jsonb, issued_at timestamptz NOT NULL, blob bytea, score numeric);
CREATE TABLE log (seq bigserial PRIMARY KEY, what text NOT NULL)`
	return ms
}

// shopWriter writes random rows to a shop database, as a token server would:
// inserts, updates and deletes (a person's badges go with them), some in one
// transaction. after says whether the schema is after 0002.
type shopWriter struct {
	db     *sql.DB
	rng    *rand.Rand
	after  bool
	people []string
	badges []string
	n      int
}

func newShopWriter(db *sql.DB, seed uint64, after bool) *shopWriter {
	return &shopWriter{db: db, rng: rand.New(rand.NewPCG(seed, 14)), after: after}
}

func (w *shopWriter) word(n int) string {
	runes := []rune("ab zé日 -'\"{},\\")
	var b strings.Builder
	for range n {
		b.WriteRune(runes[w.rng.IntN(len(runes))])
	}
	return b.String()
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (w *shopWriter) insertPerson(ctx context.Context, q execer) error {
	w.n++
	id := fmt.Sprintf("p%d-%d", w.rng.IntN(1<<30), w.n)
	var err error
	if w.after {
		var family any
		if w.rng.IntN(2) == 0 {
			family = w.word(6)
		}
		_, err = q.ExecContext(ctx, `INSERT INTO people (id, given_name, family_name, years, note) VALUES ($1, $2, $3, $4, $5)`,
			id, w.word(5), family, w.rng.IntN(100), nil)
	} else {
		_, err = q.ExecContext(ctx, `INSERT INTO people (id, full_name, age, note) VALUES ($1, $2, $3, $4)`,
			id, w.word(w.rng.IntN(12)), w.rng.IntN(100), w.word(3))
	}
	if err == nil {
		w.people = append(w.people, id)
	}
	return err
}

func (w *shopWriter) insertBadge(ctx context.Context, q execer) error {
	if len(w.people) == 0 {
		return w.insertPerson(ctx, q)
	}
	w.n++
	id := fmt.Sprintf("b%d-%d", w.rng.IntN(1<<30), w.n)
	blob := make([]byte, w.rng.IntN(8))
	for i := range blob {
		blob[i] = byte(w.rng.IntN(256))
	}
	_, err := q.ExecContext(ctx, `INSERT INTO badges (id, person_id, tags, data, issued_at, blob, score)
VALUES ($1, $2, $3, $4, now() - make_interval(secs => $5), $6, $7::numeric / 7)`,
		id, w.people[w.rng.IntN(len(w.people))], pq.Array([]string{w.word(3), w.word(4)}),
		fmt.Sprintf(`{"k": %q, "n": %d}`, w.word(4), w.rng.IntN(9)), w.rng.Float64()*1e6, blob, w.rng.IntN(1000))
	if err == nil {
		w.badges = append(w.badges, id)
	}
	return err
}

// step makes one random change, or a few in one transaction.
func (w *shopWriter) step(ctx context.Context) error {
	switch op := w.rng.IntN(12); {
	case op < 3:
		return w.insertPerson(ctx, w.db)
	case op < 5 && len(w.people) > 0:
		id := w.people[w.rng.IntN(len(w.people))]
		if w.after {
			_, err := w.db.ExecContext(ctx, `UPDATE people SET given_name = $2, years = years + 1 WHERE id = $1`, id, w.word(4))
			return err
		}
		_, err := w.db.ExecContext(ctx, `UPDATE people SET full_name = $2, age = NULL WHERE id = $1`, id, w.word(w.rng.IntN(10)))
		return err
	case op < 6 && len(w.people) > 0:
		i := w.rng.IntN(len(w.people))
		id := w.people[i]
		w.people = append(w.people[:i], w.people[i+1:]...)
		_, err := w.db.ExecContext(ctx, `DELETE FROM people WHERE id = $1`, id)
		return err
	case op < 8:
		return w.insertBadge(ctx, w.db)
	case op < 9 && len(w.badges) > 0:
		_, err := w.db.ExecContext(ctx, `UPDATE badges SET tags = array_append(tags, $2::text), data = NULL, score = NULL WHERE id = $1`,
			w.badges[w.rng.IntN(len(w.badges))], w.word(2))
		return err
	case op < 10:
		_, err := w.db.ExecContext(ctx, `INSERT INTO log (what) VALUES ($1)`, w.word(5))
		return err
	default:
		tx, err := w.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		if err := w.insertPerson(ctx, tx); err != nil {
			return err
		}
		if err := w.insertBadge(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO log (what) VALUES ('both')`); err != nil {
			return err
		}
		return tx.Commit()
	}
}

// background runs steps until stop is called, which returns the first error.
// progress receives every step's number.
func (w *shopWriter) background(t *testing.T) (progress <-chan int, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan int, 1)
	var (
		wg  sync.WaitGroup
		err error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ctx.Err() == nil; i++ {
			if e := w.step(ctx); e != nil {
				if ctx.Err() == nil {
					err = e
				}
				return
			}
			select {
			case ch <- i:
			default:
			}
		}
	}()
	return ch, func() {
		t.Helper()
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("writer: %v", err)
		}
	}
}

// waitSteps waits until the writer has made n more steps.
func waitSteps(t *testing.T, progress <-chan int, n int) {
	t.Helper()
	start := -1
	timeout := time.After(30 * time.Second)
	for {
		select {
		case i := <-progress:
			if start < 0 {
				start = i
			}
			if i-start >= n {
				return
			}
		case <-timeout:
			t.Fatalf("the writer made fewer than %d steps in 30s", n)
		}
	}
}

func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := postgres.OpenDB(dsn, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// shopDatabases returns a source at schema 1 with rows and an empty target.
func shopDatabases(t *testing.T) (src, dst *sql.DB, w *shopWriter) {
	t.Helper()
	src, dst = openDB(t, pg.NewDatabase(t)), openDB(t, pg.NewDatabase(t))
	if _, err := postgres.Migrate(context.Background(), src, shop(), postgres.MigrateOptions{To: 1}); err != nil {
		t.Fatal(err)
	}
	w = newShopWriter(src, 1, false)
	for range 300 {
		if err := w.step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return src, dst, w
}

// tableRowsKeyed reads every row of table as text, by the text of column key.
func tableRowsKeyed(t *testing.T, db *sql.DB, table, key string) map[string]postgres.Row {
	t.Helper()
	out := map[string]postgres.Row{}
	rows, err := db.Query(`SELECT ` + pq.QuoteIdentifier(key) + `::text, t::text FROM ` + pq.QuoteIdentifier(table) + ` t`)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = postgres.Row{key: k, "row": v}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkReplayed checks that to's rows are exactly from's through the transform
// (Forward, or Backward when back): people through it, badges and log as they are.
func checkReplayed(t *testing.T, from, to *sql.DB, back bool) {
	t.Helper()
	tr := shop()[1].Transforms[0]
	f := tr.Forward
	if back {
		f = tr.Backward
	}
	want := map[string]postgres.Row{}
	for id, r := range tableRows(t, from, "people") {
		out, err := f(r)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = out
	}
	got := tableRows(t, to, "people")
	diff(t, "people", want, got)
	diff(t, "badges", tableRows(t, from, "badges"), tableRows(t, to, "badges"))
	diff(t, "log", tableRowsKeyed(t, from, "log", "seq"), tableRowsKeyed(t, to, "log", "seq"))
}

func diff(t *testing.T, table string, want, got map[string]postgres.Row) {
	t.Helper()
	if reflect.DeepEqual(want, got) {
		return
	}
	var missing, extra, differ []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case !reflect.DeepEqual(w, g):
			differ = append(differ, fmt.Sprintf("%s: want %v, got %v", k, w, g))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	sort.Strings(differ)
	t.Errorf("%s: %d rows wanted, %d there; missing %.5v, extra %.5v, different %.3v", table, len(want), len(got), missing, extra, differ)
}

func pass(t *testing.T, from, to *sql.DB, id, direction string) postgres.ReplayResult {
	t.Helper()
	ms := shop()
	if id == "real" {
		ms = postgres.Migrations()
	}
	res, err := postgres.ReplayPass(context.Background(), from, to, postgres.ReplayOptions{UpgradeID: id, Direction: direction,
		Migrations: ms, PageSize: 37})
	if err != nil {
		t.Fatalf("replay pass: %v", err)
	}
	return res
}

// Copy and replay under concurrent writes: a writer changes the source all along,
// before, during and after the copy (one transaction is open across its snapshot),
// and between replay passes; after it stops, one more pass leaves nothing pending,
// and the copy's rows are exactly Forward of every source row (people split by the
// breaking migration), badges and log as they are: nothing missing, nothing extra.
func TestCopyAndReplayUnderWrites(t *testing.T) {
	ctx := context.Background()
	src, dst, w := shopDatabases(t)
	if err := postgres.InstallCapture(ctx, src, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	progress, stop := w.background(t)
	var (
		inflight       *sql.Tx
		begun, commits sync.Once
	)
	res, err := postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "u1", Migrations: shop(),
		Log: func(format string, args ...any) {
			switch {
			case strings.HasPrefix(format, "applied "):
				// The target is being migrated to the source's schema: the snapshot
				// comes next, and this transaction is open across it.
				begun.Do(func() {
					var err error
					if inflight, err = src.BeginTx(ctx, nil); err != nil {
						t.Error(err)
						return
					}
					if _, err := inflight.ExecContext(ctx, `INSERT INTO people (id, full_name) VALUES ('inflight', 'In Flight')`); err != nil {
						t.Error(err)
					}
				})
			case strings.HasPrefix(format, "copied %s"):
				// After the snapshot: it commits while the rows are copied.
				commits.Do(func() {
					if err := inflight.Commit(); err != nil {
						t.Error(err)
					}
				})
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	var inCopy int64
	if err := dst.QueryRow(`SELECT (SELECT count(*) FROM people) + (SELECT count(*) FROM badges) + (SELECT count(*) FROM log)`).
		Scan(&inCopy); err != nil {
		t.Fatal(err)
	}
	if res.SchemaFrom != 1 || res.SchemaTo != 2 || res.RowsCopied < 200 || res.RowsCopied != inCopy || res.Snapshot == "" {
		t.Errorf("copy = %+v; want schema 1 → 2, the %d rows in the copy, a snapshot", res, inCopy)
	}
	if got := tableRows(t, dst, "people"); got["inflight"] != nil {
		t.Errorf("the copy has the row of a transaction open at its snapshot")
	}
	replayed := 0
	for range 4 {
		waitSteps(t, progress, 40)
		replayed += pass(t, src, dst, "u1", postgres.DirectionForward).Replayed
	}
	stop()
	last := pass(t, src, dst, "u1", postgres.DirectionForward)
	if last.Pending != 0 || last.Lag != 0 {
		t.Errorf("after the last pass: %d pending, lag %s; want none", last.Pending, last.Lag)
	}
	if replayed+last.Replayed < 100 {
		t.Errorf("%d rows replayed; the writer made 160+ changes after the copy", replayed+last.Replayed)
	}
	checkReplayed(t, src, dst, false)
	if got := tableRows(t, dst, "people")["inflight"]; got == nil || got["given_name"] != "In" || got["family_name"] != "Flight" {
		t.Errorf("the open transaction's row after replay: %v", got)
	}
	// A pass with nothing new replays nothing.
	if again := pass(t, src, dst, "u1", postgres.DirectionForward); again.Replayed != 0 {
		t.Errorf("a pass with no change replayed %d rows", again.Replayed)
	}
}

// A pass killed mid-way leaves nothing of itself (rows and since as before), and the
// next one gives the same result; two passes at once are serialised by the advisory
// lock on the target, and a pass waits for whoever holds it.
func TestReplayPassKilledAndConcurrent(t *testing.T) {
	ctx := context.Background()
	src, dst, w := shopDatabases(t)
	if _, err := postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "u2", Migrations: shop()}); err != nil {
		t.Fatal(err)
	}
	for range 300 {
		if err := w.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	since := func() string {
		var s string
		if err := dst.QueryRow(`SELECT since FROM kubeoauth_upgrade.replay WHERE upgrade_id = 'u2'`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before, people := since(), tableRows(t, dst, "people")

	// Killed after 20 rows went through the transform.
	ms := shop()
	kctx, cancel := context.WithCancel(ctx)
	n := 0
	fwd := ms[1].Transforms[0].Forward
	ms[1].Transforms[0].Forward = func(r postgres.Row) (postgres.Row, error) {
		if n++; n == 20 {
			cancel()
		}
		return fwd(r)
	}
	if _, err := postgres.ReplayPass(kctx, src, dst, postgres.ReplayOptions{UpgradeID: "u2", Direction: postgres.DirectionForward,
		Migrations: ms, PageSize: 10}); err == nil {
		t.Fatal("a pass cancelled mid-way succeeded")
	}
	if n < 20 {
		t.Fatalf("the pass was killed after %d rows; the test wants it mid-way", n)
	}
	if since() != before {
		t.Errorf("a killed pass moved since")
	}
	diff(t, "people after a killed pass", people, tableRows(t, dst, "people"))
	pass(t, src, dst, "u2", postgres.DirectionForward)
	checkReplayed(t, src, dst, false)

	// Two at once, again and again, while the writer writes.
	progress, stop := w.background(t)
	for range 5 {
		waitSteps(t, progress, 20)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = postgres.ReplayPass(ctx, src, dst, postgres.ReplayOptions{UpgradeID: "u2", Direction: postgres.DirectionForward,
					Migrations: shop(), PageSize: 7})
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent passes: %v", err)
		}
	}
	stop()
	pass(t, src, dst, "u2", postgres.DirectionForward)
	checkReplayed(t, src, dst, false)

	// Whoever holds the lock holds the pass up.
	conn, err := dst.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	key := postgres.ReplayLockKey("u2", postgres.DirectionForward)
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := postgres.ReplayPass(ctx, src, dst, postgres.ReplayOptions{UpgradeID: "u2", Direction: postgres.DirectionForward, Migrations: shop()})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		if err := dst.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the pass ran while another held the lock (%v)", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the pass never waited for the lock")
		}
		<-time.After(20 * time.Millisecond) // polling pg_locks, not waiting for the pass
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the pass after the lock was released: %v", err)
	}
}

// Backward: after the cutover the copy serves; rows written there in the new shape
// are replayed into the original with Backward, in the original shape.
func TestReplayBackward(t *testing.T) {
	ctx := context.Background()
	src, dst, _ := shopDatabases(t)
	if _, err := postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "u3", Migrations: shop()}); err != nil {
		t.Fatal(err)
	}
	pass(t, src, dst, "u3", postgres.DirectionForward)
	// What the cutover does: capture on the copy, and the backward replay's start.
	if err := postgres.InstallCapture(ctx, dst, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	snap, err := postgres.Snapshot(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := postgres.StartReplay(ctx, src, "u3", postgres.DirectionBackward, snap, 2, 1); err != nil {
		t.Fatal(err)
	}
	w := newShopWriter(dst, 3, true)
	for range 300 {
		if err := w.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Rows the copy had before, changed there too.
	if _, err := dst.ExecContext(ctx, `UPDATE people SET family_name = 'Back' WHERE id IN (SELECT id FROM people ORDER BY id LIMIT 20)`); err != nil {
		t.Fatal(err)
	}
	if res := pass(t, dst, src, "u3", postgres.DirectionBackward); res.Replayed < 100 || res.Pending != 0 {
		t.Errorf("backward pass = %+v; want 100+ rows, none pending", res)
	}
	checkReplayed(t, dst, src, true)
}

// A rerun of a finished copy changes nothing and reports the same; a partial one
// starts over; a target that holds anything else is refused, naming what it holds.
func TestCopyRerunAndRefusals(t *testing.T) {
	ctx := context.Background()
	src, dst, w := shopDatabases(t)
	first, err := postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "u4", Migrations: shop()})
	if err != nil {
		t.Fatal(err)
	}
	copied := tableRows(t, dst, "people")
	for range 50 {
		if err := w.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	again, err := postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "u4", Migrations: shop()})
	if err != nil || again != first {
		t.Errorf("rerun = %+v, %v; want %+v", again, err, first)
	}
	diff(t, "people after a rerun", copied, tableRows(t, dst, "people"))

	// Another upgrade's copy, and a database of something else.
	var refused *postgres.RefusedError
	_, err = postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "u5", Migrations: shop()})
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "copy of upgrade u4") {
		t.Errorf("copy of u5 onto u4's copy: %v; want refused naming u4", err)
	}
	other := openDB(t, pg.NewDatabase(t))
	if _, err := other.Exec(`CREATE TABLE invoices (id int PRIMARY KEY); INSERT INTO invoices VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	_, err = postgres.CopyDatabase(ctx, src, other, postgres.CopyOptions{UpgradeID: "u4", Migrations: shop()})
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "table invoices") {
		t.Errorf("copy onto a database with invoices: %v; want refused naming the table", err)
	}
	var n int
	if err := other.QueryRow(`SELECT count(*) FROM invoices`).Scan(&n); err != nil || n != 1 {
		t.Errorf("invoices after the refused copy: %d rows (%v)", n, err)
	}

	// Left half-way (the Job killed while migrating): started over, from a new snapshot.
	if _, err := dst.Exec(`UPDATE kubeoauth_upgrade.copy SET state = 'migrating' WHERE upgrade_id = 'u4'`); err != nil {
		t.Fatal(err)
	}
	redo, err := postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "u4", Migrations: shop()})
	if err != nil || redo.Snapshot == first.Snapshot || redo.RowsCopied <= first.RowsCopied {
		t.Fatalf("copy over a partial one = %+v, %v; want a new snapshot with the rows written since", redo, err)
	}
	checkReplayed(t, src, dst, false)
	if res := pass(t, src, dst, "u4", postgres.DirectionForward); res.Replayed != 0 {
		t.Errorf("a pass right after the copy replayed %d rows", res.Replayed)
	}
}

// The token server's own tables, written by the real store before and after the
// copy (clients, tokens of every kind through fosite's calls, grants, their events,
// sign-in sessions, client assertion jtis): after a pass the copy's every table is
// the original's, row for row as text; the pass's NOTIFYs reach a listener on the
// copy with what the token servers there expect, and a token server's store there
// drops the access token and the client it had cached.
func TestCopyAndReplayTokenServerTables(t *testing.T) {
	ctx := context.Background()
	srcDSN := pg.NewMigratedDatabase(t)
	dstDSN := pg.NewDatabase(t)
	src, dst := openDB(t, srcDSN), openDB(t, dstDSN)
	s, err := postgres.Open(ctx, srcDSN, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	now := time.Now()
	write := func(round string) {
		t.Helper()
		c := client("secret")
		c.ID = "app-" + round
		if _, err := s.PutClient(ctx, c); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutClient(ctx, client("secret-"+round)); err != nil {
			t.Fatal(err)
		}
		req := tokenRequest(t, s, "req-"+round, now)
		for _, f := range []func() error{
			func() error { return s.CreateAccessTokenSession(ctx, "at-"+round, req) },
			func() error { return s.CreateRefreshTokenSession(ctx, "rt-"+round, "at-"+round, req) },
			func() error { return s.CreateAuthorizeCodeSession(ctx, "code-"+round, req) },
			func() error { return s.CreatePKCERequestSession(ctx, "pkce-"+round, req) },
			func() error { return s.SetClientAssertionJWT(ctx, "jti-"+round, now.Add(time.Hour)) },
			func() error {
				return s.CreateSignInSession(ctx, &store.SignInSession{ID: "sess-" + round, Subject: "alice", CreatedAt: now,
					ExpiresAt: now.Add(time.Hour)})
			},
			func() error {
				_, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "sub-" + round,
					Scopes: []string{"openid", "a b", `q"uote`}, Source: store.SourceBrowser, GrantedAt: now})
				return err
			},
		} {
			if err := f(); err != nil {
				t.Fatalf("round %s: %v", round, err)
			}
		}
	}
	write("1")
	write("2")
	if err := s.RevokeGrant(ctx, "grafana", "sub-1"); err != nil {
		t.Fatal(err)
	}
	res, err := postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "real", Migrations: postgres.Migrations()})
	if err != nil {
		t.Fatal(err)
	}
	latest := len(postgres.Migrations())
	if res.SchemaFrom != latest || res.SchemaTo != latest {
		t.Errorf("copy = %+v; want schema %d → %d", res, latest, latest)
	}
	sameTables(t, src, dst)

	// A token server on the copy, its clock stopped so that nothing it caches ever
	// expires: only the replay's NOTIFYs can make it drop what it cached.
	green, err := postgres.Open(ctx, dstDSN, postgres.Options{Now: storetest.NewClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = green.Close() }()
	fctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	listening := make(chan struct{})
	var once sync.Once
	go func() { _ = green.Follow(fctx, func() { once.Do(func() { close(listening) }) }) }()
	<-listening
	if _, err := green.GetAccessTokenSession(ctx, "at-1", &storetest.Session{}); err != nil {
		t.Fatal(err)
	}
	if _, err := green.GetClient(ctx, "app-2"); err != nil {
		t.Fatal(err)
	}

	// After the copy: more of everything, a revocation, deletions.
	write("3")
	grant, err := s.GetGrant(ctx, "grafana", "sub-3")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() error{
		func() error { return s.RevokeRefreshToken(ctx, "req-2") },
		func() error { return s.RevokeGrant(ctx, "grafana", "sub-3") },
		func() error { return s.EndSignInSession(ctx, "sess-1") },
		func() error { return s.DeleteClient(ctx, "app-2", "observability") },
		func() error { return s.DeleteAccessTokenSession(ctx, "at-1") },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	l := pq.NewListener(dstDSN, 10*time.Millisecond, time.Second, nil)
	defer func() { _ = l.Close() }()
	for _, ch := range []string{postgres.ClientsChannel, postgres.TokensChannel, postgres.NotifyChannel} {
		if err := l.Listen(ch); err != nil {
			t.Fatal(err)
		}
	}
	if r := pass(t, src, dst, "real", postgres.DirectionForward); r.Replayed == 0 || r.Pending != 0 {
		t.Errorf("pass = %+v", r)
	}
	sameTables(t, src, dst)

	var lastSeq int64
	if err := src.QueryRow(`SELECT max(seq) FROM events`).Scan(&lastSeq); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		postgres.ClientsChannel + " app-3":                            true, // written
		postgres.ClientsChannel + " app-2":                            true, // deleted
		postgres.TokensChannel + " sig:at-3":                          true,
		postgres.TokensChannel + " sig:at-1":                          true, // deleted
		postgres.NotifyChannel + " " + strconv.FormatInt(lastSeq, 10): true,
	}
	want[postgres.TokensChannel+" grant:"+grant.ID] = true
	// The token server on the copy dropped the access token and the client deleted
	// on the original.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errToken := green.GetAccessTokenSession(ctx, "at-1", &storetest.Session{})
		_, errClient := green.GetClient(ctx, "app-2")
		if errToken != nil && errClient != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the token server on the copy still serves from its cache: token %v, client %v", errToken, errClient)
		}
		<-time.After(10 * time.Millisecond) // polling its caches
	}
	timeout := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case n := <-l.Notify:
			if n != nil {
				delete(want, n.Channel+" "+n.Extra)
			}
		case <-timeout:
			t.Fatalf("notifications never heard on the copy: %v", want)
		}
	}
}

// sameTables compares every table of the token server's schema, row for row as text.
func sameTables(t *testing.T, a, b *sql.DB) {
	t.Helper()
	for _, table := range []string{"clients", "tokens", "consent_grants", "events", "sign_in_sessions", "client_assertion_jtis"} {
		ra, rb := tableTexts(t, a, table), tableTexts(t, b, table)
		if !reflect.DeepEqual(ra, rb) {
			t.Errorf("table %s differs:\noriginal %q\ncopy     %q", table, ra, rb)
		} else if len(ra) == 0 {
			t.Errorf("table %s is empty: the test should fill it", table)
		}
	}
}

func tableTexts(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	rows, err := db.Query(`SELECT t::text FROM ` + pq.QuoteIdentifier(table) + ` t ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A table only one side has is left out of the replay, as a column is, and the
// rest is carried: going back, one the newer version's migrations added and wrote
// while it served; going forward, one its migrations dropped that the older
// version still writes. Refused, it stopped every later pass, revocations with it.
func TestReplayTablesOnOneSide(t *testing.T) {
	ctx := context.Background()
	ms := append(shop(), postgres.Migration{Version: 3, Name: "audit", Kind: postgres.Expand, Transaction: true,
		SQL: `CREATE TABLE audit (id text PRIMARY KEY, what text NOT NULL)`})
	src, dst, w := shopDatabases(t)
	if _, err := postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "u7", Migrations: ms}); err != nil {
		t.Fatal(err)
	}
	if err := postgres.InstallCapture(ctx, dst, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	snap, err := postgres.Snapshot(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := postgres.StartReplay(ctx, src, "u7", postgres.DirectionBackward, snap, 3, 1); err != nil {
		t.Fatal(err)
	}
	gone := w.badges[0]
	for _, q := range []string{`INSERT INTO audit (id, what) VALUES ('a1', 'served')`, `DELETE FROM badges WHERE id = '` + gone + `'`} {
		if _, err := dst.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for pass := range 2 {
		res, err := postgres.ReplayPass(ctx, dst, src, postgres.ReplayOptions{UpgradeID: "u7", Direction: postgres.DirectionBackward,
			Migrations: ms})
		if err != nil {
			t.Fatalf("backward pass %d, a table only the copy has changed: %v", pass, err)
		}
		if res.Pending != 0 {
			t.Errorf("backward pass %d: %d changes pending", pass, res.Pending)
		}
	}
	if got := tableRows(t, src, "badges")[gone]; got != nil {
		t.Errorf("the badge deleted on the copy is still in the original: %v", got)
	}

	// Forward: the copy lacks a table the original still writes.
	if _, err := dst.Exec(`DROP TABLE audit`); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(`CREATE TABLE audit (id text PRIMARY KEY, what text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := postgres.InstallCapture(ctx, src, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(`INSERT INTO audit (id, what) VALUES ('a2', 'old side')`); err != nil {
		t.Fatal(err)
	}
	if tableRows(t, dst, "badges")[w.badges[1]] == nil {
		t.Fatalf("badge %s is not on the copy to begin with", w.badges[1])
	}
	if _, err := src.Exec(`DELETE FROM badges WHERE id = $1`, w.badges[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.ReplayPass(ctx, src, dst, postgres.ReplayOptions{UpgradeID: "u7", Direction: postgres.DirectionForward,
		Migrations: ms}); err != nil {
		t.Fatalf("forward, a table only the original has changed: %v", err)
	}
	if got := tableRows(t, dst, "badges")[w.badges[1]]; got != nil {
		t.Errorf("the badge deleted on the original is still on the copy: %v", got)
	}
}

// Across an expand migration, a row carries a column the other side lacks
// (badges.color, added by 0003 on the copy): going back it is left out, since only
// the new version uses it. A column the target lacks that a transform made up is
// its mistake, refused naming it.
func TestReplayColumnsOnOneSide(t *testing.T) {
	ctx := context.Background()
	ms := append(shop(), postgres.Migration{Version: 3, Name: "badge_color", Kind: postgres.Expand, Transaction: true,
		SQL: `ALTER TABLE badges ADD COLUMN color text`})
	src, dst, w := shopDatabases(t)
	if _, err := postgres.CopyDatabase(ctx, src, dst, postgres.CopyOptions{UpgradeID: "u6", Migrations: ms}); err != nil {
		t.Fatal(err)
	}
	if err := postgres.InstallCapture(ctx, dst, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	snap, err := postgres.Snapshot(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := postgres.StartReplay(ctx, src, "u6", postgres.DirectionBackward, snap, 3, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Exec(`INSERT INTO badges (id, person_id, issued_at, color) VALUES ('colored', $1, now(), 'red')`, w.people[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.ReplayPass(ctx, dst, src, postgres.ReplayOptions{UpgradeID: "u6", Direction: postgres.DirectionBackward,
		Migrations: ms}); err != nil {
		t.Fatalf("backward across an expand migration: %v", err)
	}
	if got := tableRows(t, src, "badges")["colored"]; got == nil || got["person_id"] != w.people[0] {
		t.Errorf("the badge written on the copy, in the original: %v", got)
	}

	// Forward with a transform that makes a column the copy does not have.
	bad := append(shop(), ms[2])
	split := bad[1].Transforms[0].Forward
	bad[1].Transforms[0].Forward = func(r postgres.Row) (postgres.Row, error) {
		out, err := split(r)
		if err == nil {
			out["nickname"] = "x"
		}
		return out, err
	}
	if _, err := src.Exec(`UPDATE people SET note = 'changed' WHERE id = $1`, w.people[0]); err != nil {
		t.Fatal(err)
	}
	_, err = postgres.ReplayPass(ctx, src, dst, postgres.ReplayOptions{UpgradeID: "u6", Direction: postgres.DirectionForward, Migrations: bad})
	if err == nil || !strings.Contains(err.Error(), "column nickname") {
		t.Errorf("a transform making a column the target lacks: %v; want refused naming nickname", err)
	}
}
