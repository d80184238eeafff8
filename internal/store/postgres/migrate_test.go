package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// Every migration applies on an empty database, and the store opens on the result.
func TestMigrateEmptyDatabase(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewDatabase(t)
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	ms := postgres.Migrations()
	ran, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ran) != len(ms) {
		t.Fatalf("applied %d of %d migrations", len(ran), len(ms))
	}
	applied, err := postgres.Applied(ctx, db)
	if err != nil || len(applied) != len(ms) {
		t.Fatalf("Applied = %v, %v", applied, err)
	}
	// Nothing left to do the second time.
	if ran, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{}); err != nil || len(ran) != 0 {
		t.Fatalf("second Migrate ran %v, %v; want nothing", ran, err)
	}
	// The indexes built concurrently are valid (a failed concurrent build leaves an
	// invalid one behind).
	var invalid int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_index WHERE NOT indisvalid`).Scan(&invalid); err != nil || invalid != 0 {
		t.Errorf("invalid indexes: %d (%v)", invalid, err)
	}
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatalf("Open on a fully migrated database: %v", err)
	}
	_ = s.Close()
}

// From every earlier version, migrating to the latest works and yields the same schema
// as migrating an empty database.
func TestMigrateFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	ms := postgres.Migrations()
	want := schemaOf(t, pg.NewMigratedDatabase(t))
	for from := 1; from < len(ms); from++ {
		t.Run(ms[from-1].Name, func(t *testing.T) {
			dsn := pg.NewDatabase(t)
			db, err := postgres.OpenDB(dsn, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = db.Close() }()
			if _, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{To: from}); err != nil {
				t.Fatal(err)
			}
			if _, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{}); err != nil {
				t.Fatalf("from version %d: %v", from, err)
			}
			if got := schemaOf(t, dsn); got != want {
				t.Errorf("schema migrated from %d differs from a fresh one:\n%s\nwant:\n%s", from, got, want)
			}
		})
	}
}

// Two migration Jobs at once apply each migration once.
func TestMigrateConcurrently(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewDatabase(t)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	for range 3 {
		wg.Go(func() {
			db, err := postgres.OpenDB(dsn, 2)
			if err != nil {
				t.Error(err)
				return
			}
			defer func() { _ = db.Close() }()
			ran, err := postgres.Migrate(ctx, db, postgres.Migrations(), postgres.MigrateOptions{})
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += len(ran)
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != len(postgres.Migrations()) {
		t.Errorf("three concurrent migrators applied %d migrations in all, want %d", total, len(postgres.Migrations()))
	}
}

func TestOpenRefusesUnusableSchema(t *testing.T) {
	ctx := context.Background()
	// An empty database: the server says to migrate.
	_, err := postgres.Open(ctx, pg.NewDatabase(t), postgres.Options{})
	if !errors.Is(err, postgres.ErrSchema) || !strings.Contains(err.Error(), "tokenserver migrate up") {
		t.Errorf("Open on an empty database: %v; want ErrSchema telling to run migrate up", err)
	}
	// A contract migration from a newer binary: the server says it cannot serve.
	dsn := pg.NewMigratedDatabase(t)
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := db.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, kind) VALUES (999, 'drop_old_columns', 'contract')`); err != nil {
		t.Fatal(err)
	}
	_, err = postgres.Open(ctx, dsn, postgres.Options{})
	if !errors.Is(err, postgres.ErrSchema) || !strings.Contains(err.Error(), "0999_drop_old_columns") || !strings.Contains(err.Error(), "newer token server") {
		t.Errorf("Open after a newer contract migration: %v", err)
	}
	// A newer expand migration is fine: every query names its columns.
	if _, err := db.ExecContext(ctx, `UPDATE schema_migrations SET kind = 'expand' WHERE version = 999`); err != nil {
		t.Fatal(err)
	}
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Errorf("Open after a newer expand migration: %v", err)
	} else {
		_ = s.Close()
	}
}

func TestCheckSchemaAndPlan(t *testing.T) {
	ms := []postgres.Migration{
		{Version: 1, Name: "init", Kind: postgres.Expand},
		{Version: 2, Name: "add_col", Kind: postgres.Expand},
		{Version: 3, Name: "drop_old", Kind: postgres.Contract},
	}
	plan := postgres.NewPlan(ms)
	if plan.Latest != 3 || plan.MinSchema != 2 {
		t.Errorf("plan = latest %d, min %d; want 3, 2", plan.Latest, plan.MinSchema)
	}
	applied := func(kinds ...string) []postgres.AppliedMigration { return appliedAs(ms, kinds...) }
	tests := map[string]struct {
		applied []postgres.AppliedMigration
		wantErr string
	}{
		"empty":                    {nil, "lacks migration 0001_init"},
		"one expand missing":       {applied("expand"), "lacks migration 0002_add_col"},
		"expanded, not contracted": {applied("expand", "expand"), ""},
		"all":                      {applied("expand", "expand", "contract"), ""},
		"newer expand":             {applied("expand", "expand", "contract", "expand"), ""},
		"newer contract":           {applied("expand", "expand", "contract", "contract"), "contract migration 0004_m"},
		// A build branched off before another build's 0002 was written: matched by
		// number, its own 0002 would look applied.
		"another migration under the same number": {[]postgres.AppliedMigration{{Version: 1, Name: "init", Kind: postgres.Expand},
			{Version: 2, Name: "token_issue_log", Kind: postgres.Expand}}, "has migration 0002_token_issue_log where this token server has 0002_add_col"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := postgres.CheckSchema(ms, tt.applied)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("CheckSchema = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// The plan Job's decision: expand-only pending → Shared, contracts deferred; a needed
// migration behind a pending contract → Copy; a schema a newer binary contracted →
// Refused. Each reason names the migrations that decide it.
func TestPlanUpgrade(t *testing.T) {
	ms := []postgres.Migration{
		{Version: 1, Name: "init", Kind: postgres.Expand},
		{Version: 2, Name: "add_col", Kind: postgres.Expand},
		{Version: 3, Name: "drop_old", Kind: postgres.Contract},
	}
	behindContract := append(append([]postgres.Migration(nil), ms...), postgres.Migration{Version: 4, Name: "new_table", Kind: postgres.Expand})
	unknownKind := append(append([]postgres.Migration(nil), ms...), postgres.Migration{Version: 4, Name: "rewrite", Kind: "breaking"})
	applied := func(kinds ...string) []postgres.AppliedMigration { return appliedAs(ms, kinds...) }
	tests := map[string]struct {
		ms      []postgres.Migration
		applied []postgres.AppliedMigration
		serving int // --serving-schema; 0: unknown
		want    postgres.UpgradePlan
		reason  []string
	}{
		"one expand pending, a contract deferred": {ms, applied("expand"), 0,
			postgres.UpgradePlan{Mode: postgres.ModeShared, SchemaFrom: 1, SchemaTo: 3},
			[]string{"expand migrations 0002_add_col run while the old version serves", "contract migrations 0003_drop_old wait"}},
		"empty database": {ms, nil, 0, postgres.UpgradePlan{Mode: postgres.ModeShared, SchemaFrom: 0, SchemaTo: 3},
			[]string{"0001_init, 0002_add_col"}},
		"only the contract pending": {ms, applied("expand", "expand"), 0,
			postgres.UpgradePlan{Mode: postgres.ModeShared, SchemaFrom: 2, SchemaTo: 3},
			[]string{"no expand migration", "0003_drop_old wait"}},
		"up to date": {ms, applied("expand", "expand", "contract"), 0,
			postgres.UpgradePlan{Mode: postgres.ModeShared, SchemaFrom: 3, SchemaTo: 3}, []string{"no migration to apply"}},
		"database ahead with an expand": {ms, applied("expand", "expand", "contract", "expand"), 0,
			postgres.UpgradePlan{Mode: postgres.ModeShared, SchemaFrom: 4, SchemaTo: 3}, []string{"no migration to apply"}},
		"database ahead with a contract": {ms, applied("expand", "expand", "contract", "contract"), 0,
			postgres.UpgradePlan{Mode: postgres.ModeRefused, SchemaFrom: 4, SchemaTo: 3}, []string{"contract migration 0004_m", "newer token server"}},
		"a needed expand behind a pending contract, serving version unknown": {behindContract, applied("expand", "expand"), 0,
			postgres.UpgradePlan{Mode: postgres.ModeCopy, SchemaFrom: 2, SchemaTo: 4},
			[]string{"needs 0004_new_table", "contract migration 0003_drop_old, not applied", "schema is unknown", "--serving-schema"}},
		"a needed expand behind a contract of a newer version than the serving one": {behindContract, applied("expand", "expand"), 2,
			postgres.UpgradePlan{Mode: postgres.ModeCopy, SchemaFrom: 2, SchemaTo: 4},
			[]string{"needs 0004_new_table", "serving version (schema 2) does not know that migration"}},
		// The serving version's contract failed or has not run: it serves after it, so
		// it runs first and the next version goes on as usual.
		"the serving version's own contract pending": {behindContract, applied("expand", "expand"), 3,
			postgres.UpgradePlan{Mode: postgres.ModeShared, SchemaFrom: 2, SchemaTo: 4},
			[]string{"contract migrations 0003_drop_old of the serving version (schema 3), not applied yet, run first",
				"expand migrations 0004_new_table run while the old version serves"}},
		"the serving version's own contract pending, nothing else": {ms, applied("expand", "expand"), 3,
			postgres.UpgradePlan{Mode: postgres.ModeShared, SchemaFrom: 2, SchemaTo: 3},
			[]string{"contract migrations 0003_drop_old of the serving version (schema 3), not applied yet, run first"}},
		"another migration under the same number": {behindContract, append(applied("expand", "expand", "contract"),
			postgres.AppliedMigration{Version: 4, Name: "token_issue_log", Kind: postgres.Expand}), 3,
			postgres.UpgradePlan{Mode: postgres.ModeRefused, SchemaFrom: 4, SchemaTo: 4},
			[]string{"0004_token_issue_log", "0004_new_table"}},
		"a kind the old version cannot run on": {unknownKind, applied("expand", "expand", "contract"), 0,
			postgres.UpgradePlan{Mode: postgres.ModeCopy, SchemaFrom: 3, SchemaTo: 4}, []string{"0004_rewrite (breaking)", "copy"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := postgres.PlanUpgradeFrom(tt.ms, tt.applied, tt.serving)
			reason := got.Reason
			got.Reason = ""
			if got != tt.want {
				t.Errorf("PlanUpgrade = %+v, want %+v", got, tt.want)
			}
			for _, want := range tt.reason {
				if !strings.Contains(reason, want) {
					t.Errorf("reason %q lacks %q", reason, want)
				}
			}
		})
	}
	// However many migrations it names, the reason fits status.upgrade.plan.reason.
	var many []postgres.Migration
	for i := 1; i <= 300; i++ {
		many = append(many, postgres.Migration{Version: i, Name: "a_rather_long_migration_name", Kind: postgres.Expand})
	}
	if got := postgres.PlanUpgrade(many, nil); got.Mode != postgres.ModeShared || len(got.Reason) > 1024 {
		t.Errorf("300 pending migrations: mode %s, reason of %d bytes; want Shared within 1024", got.Mode, len(got.Reason))
	}
}

// Planning reads the schema without writing: an empty database stays empty.
func TestReadAppliedChangesNothing(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.OpenDB(pg.NewDatabase(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if applied, err := postgres.ReadApplied(ctx, db); err != nil || len(applied) != 0 {
		t.Fatalf("ReadApplied on an empty database = %v, %v", applied, err)
	}
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil || tables != 0 {
		t.Errorf("%d tables after ReadApplied (%v); want none", tables, err)
	}
}

// The embedded migrations follow the rules: a header, numbered without gaps,
// CREATE INDEX only CONCURRENTLY, only outside a transaction, and a constraint added
// to an existing table NOT VALID, then validated in a statement of its own.
func TestMigrationFilesFollowTheRules(t *testing.T) {
	createIndex := regexp.MustCompile(`(?i)CREATE\s+(UNIQUE\s+)?INDEX\s+(CONCURRENTLY)?`)
	addConstraint := regexp.MustCompile(`(?is)ALTER\s+TABLE\s+\w+\s+ADD\s+CONSTRAINT\s+(\w+)[^;]*?(NOT\s+VALID)?;`)
	for _, m := range postgres.Migrations() {
		for _, match := range addConstraint.FindAllStringSubmatch(m.SQL, -1) {
			if match[2] == "" {
				t.Errorf("%04d_%s: ADD CONSTRAINT %s without NOT VALID scans the table under a lock that blocks writes",
					m.Version, m.Name, match[1])
			}
			if m.Transaction || !strings.Contains(m.SQL, "VALIDATE CONSTRAINT "+match[1]) {
				t.Errorf("%04d_%s: constraint %s must be validated by its own statement (transaction=false)", m.Version, m.Name, match[1])
			}
		}
		for _, match := range createIndex.FindAllStringSubmatch(m.SQL, -1) {
			if match[2] == "" {
				t.Errorf("%04d_%s: CREATE INDEX without CONCURRENTLY locks writes on a live table", m.Version, m.Name)
			}
			if m.Transaction {
				t.Errorf("%04d_%s: CREATE INDEX CONCURRENTLY needs transaction=false", m.Version, m.Name)
			}
		}
		if strings.Contains(strings.ToUpper(m.SQL), "SELECT *") {
			t.Errorf("%04d_%s: name the columns instead of SELECT *", m.Version, m.Name)
		}
	}
	bad := fstest.MapFS{"m/0001_x.sql": {Data: []byte("CREATE TABLE x ();\n")}}
	if _, err := postgres.ParseMigrations(fs.FS(bad), "m"); err == nil || !strings.Contains(err.Error(), "first line") {
		t.Errorf("a migration without a header: %v", err)
	}
	gap := fstest.MapFS{
		"m/0001_a.sql": {Data: []byte("-- kubeoauth:migration kind=expand\n")},
		"m/0003_c.sql": {Data: []byte("-- kubeoauth:migration kind=expand\n")},
	}
	if _, err := postgres.ParseMigrations(fs.FS(gap), "m"); err == nil || !strings.Contains(err.Error(), "without gaps") {
		t.Errorf("numbering with a gap: %v", err)
	}
}

// schemaOf describes the tables, columns and indexes of a database.
func schemaOf(t *testing.T, dsn string) string {
	t.Helper()
	db, err := postgres.OpenDB(dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	rows, err := db.QueryContext(context.Background(), `
SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var b strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		b.WriteString(line + "\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// 0003 adds the tokens→clients foreign key on a database that already has tokens of
// clients deleted in a race: those go, the constraint is validated, and from then on
// the database refuses such a token.
func TestClientForeignKeyMigrationOnOrphans(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewDatabase(t)
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := postgres.Migrate(ctx, db, postgres.Migrations(), postgres.MigrateOptions{To: 2}); err != nil {
		t.Fatal(err)
	}
	orphan := `INSERT INTO tokens (kind, signature, request_id, client_id, requested_at, session) VALUES ('access_token', $1, 'r', 'gone', now(), '{}')`
	if _, err := db.ExecContext(ctx, orphan, "sig-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.Migrate(ctx, db, postgres.Migrations(), postgres.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	var n int
	var validated bool
	if err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM tokens), (SELECT convalidated FROM pg_constraint WHERE conname = 'tokens_client_id_fkey')`).
		Scan(&n, &validated); err != nil {
		t.Fatal(err)
	}
	if n != 0 || !validated {
		t.Errorf("after 0003: %d orphan tokens left, constraint validated %v; want 0, true", n, validated)
	}
	if _, err := db.ExecContext(ctx, orphan, "sig-2"); err == nil || !strings.Contains(err.Error(), "tokens_client_id_fkey") {
		t.Errorf("a token for a client that does not exist: err = %v, want the foreign key to refuse it", err)
	}
}

// A database that applied another build's migration under a number this binary uses
// for its own is refused everywhere, naming both: by Open (the server does not start),
// by Migrate (migrate up changes nothing), by the plan (Refused).
func TestDivergedMigrationIsRefused(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	ms := postgres.Migrations()
	last := ms[len(ms)-1]
	// The other build's migration under the same number, as a rolled-back upgrade
	// leaves it.
	if _, err := db.ExecContext(ctx, `UPDATE schema_migrations SET name = 'token_issue_log' WHERE version = $1`, last.Version); err != nil {
		t.Fatal(err)
	}
	ours := fmt.Sprintf("%04d_%s", last.Version, last.Name)
	theirs := fmt.Sprintf("%04d_token_issue_log", last.Version)
	names := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), ours) || !strings.Contains(err.Error(), theirs) {
			t.Errorf("%s: %v; want an error naming %s and %s", what, err, theirs, ours)
		}
	}
	_, err = postgres.Open(ctx, dsn, postgres.Options{})
	if !errors.Is(err, postgres.ErrSchema) {
		t.Errorf("Open: %v; want ErrSchema", err)
	}
	names("Open", err)
	applied, err := postgres.Applied(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	plan := postgres.PlanUpgrade(ms, applied)
	if plan.Mode != postgres.ModeRefused {
		t.Errorf("plan: %+v; want Refused", plan)
	}
	names("plan", errors.New(plan.Reason))
	// A binary that knows one more migration would apply it on top: it must not.
	next := append(append([]postgres.Migration(nil), ms...), postgres.Migration{Version: last.Version + 1, Name: "later",
		Kind: postgres.Expand, Transaction: true, SQL: `CREATE TABLE later (id int)`})
	ran, err := postgres.Migrate(ctx, db, next, postgres.MigrateOptions{})
	names("Migrate", err)
	if len(ran) != 0 {
		t.Errorf("Migrate applied %v on a diverged schema", ran)
	}
}

// migrate up --expand-only with the serving version's schema runs that version's own
// pending contract (its contract step failed), then the new version's expand, and
// stops before a contract of the new version; without it, it stops at the first
// contract, as before.
func TestMigrateExpandOnlyRunsTheServingVersionsContract(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.OpenDB(pg.NewDatabase(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	ms := []postgres.Migration{
		{Version: 1, Name: "init", Kind: postgres.Expand, Transaction: true, SQL: `CREATE TABLE t (a int, old int)`},
		{Version: 2, Name: "drop_old", Kind: postgres.Contract, Transaction: true, SQL: `ALTER TABLE t DROP COLUMN old`},
		{Version: 3, Name: "add_b", Kind: postgres.Expand, Transaction: true, SQL: `ALTER TABLE t ADD COLUMN b int`},
		{Version: 4, Name: "drop_a", Kind: postgres.Contract, Transaction: true, SQL: `ALTER TABLE t DROP COLUMN a`},
	}
	if _, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{To: 1}); err != nil {
		t.Fatal(err)
	}
	versions := func(ran []postgres.Migration) (out []int) {
		for _, m := range ran {
			out = append(out, m.Version)
		}
		return out
	}
	if ran, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{ExpandOnly: true}); err != nil || len(ran) != 0 {
		t.Fatalf("expand-only with the serving schema unknown ran %v (%v); want nothing, 0002 is a contract", versions(ran), err)
	}
	ran, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{ExpandOnly: true, ServingSchema: 2})
	if err != nil || fmt.Sprint(versions(ran)) != "[2 3]" {
		t.Fatalf("expand-only serving schema 2 ran %v (%v); want [2 3]", versions(ran), err)
	}
}

// An expand migration's ALTER TABLE tokens behind a long transaction (a pg_dump, a
// report) times out on the lock and is retried instead of waiting, so token writes,
// which would queue behind the waiting ALTER, go on meanwhile; once the transaction
// ends the migration applies. If it never ends, the migration gives up, saying why.
func TestMigrationsNeverStallTokenWrites(t *testing.T) {
	ctx := context.Background()
	// The long transaction read tokens: it holds ACCESS SHARE on them.
	l := lockTokens(t, `SELECT count(*) FROM tokens`)
	ms := postgres.Migrations()
	next := append(append([]postgres.Migration(nil), ms...), postgres.Migration{Version: len(ms) + 1, Name: "tokens_issuer",
		Kind: postgres.Expand, Transaction: true, SQL: `ALTER TABLE tokens ADD COLUMN issuer text`})

	// The bounds below only keep a failing test from hanging: without lock_timeout
	// the ALTER waits until the long transaction ends, which here is never.
	bounded, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t.Run("gives up", func(t *testing.T) {
		_, err := postgres.Migrate(bounded, l.db, next, postgres.MigrateOptions{LockTimeout: 100 * time.Millisecond,
			LockRetries: 1, LockRetryWait: time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "tokens_issuer") || !strings.Contains(err.Error(), "lock") {
			t.Fatalf("Migrate behind a transaction that never ends: %v; want an error about the lock", err)
		}
	})
	// The migration has waited for its lock and given up at least once; token
	// writes go on while it keeps trying.
	done := l.retrying(t, bounded, "the migration", func(log func(string, ...any)) error {
		_, err := postgres.Migrate(bounded, l.db, next, postgres.MigrateOptions{LockTimeout: 100 * time.Millisecond,
			LockRetries: 1000, LockRetryWait: 10 * time.Millisecond, Log: log})
		return err
	}, func(line string) (bool, error) {
		if !strings.Contains(line, "retrying") {
			return false, fmt.Errorf("first log line of a blocked migration: %q", line)
		}
		return true, nil
	})
	l.writesGoOn(t, done, "the migration")
}

// appliedAs is schema_migrations after migrations of these kinds ran: ms's names,
// and "m" for those past ms (written by a newer binary).
func appliedAs(ms []postgres.Migration, kinds ...string) []postgres.AppliedMigration {
	out := make([]postgres.AppliedMigration, 0, len(kinds))
	for i, k := range kinds {
		name := "m"
		if i < len(ms) {
			name = ms[i].Name
		}
		out = append(out, postgres.AppliedMigration{Version: i + 1, Name: name, Kind: k})
	}
	return out
}
