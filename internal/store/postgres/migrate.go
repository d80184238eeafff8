package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

// Migrations are embedded SQL files named NNNN_name.sql whose first line declares
// their kind:
//
//	-- kubeoauth:migration kind=expand|contract|breaking [transaction=false]
//
// expand migrations only add (tables, nullable columns, indexes): the previous token
// server keeps working on the result, because every query names its columns. contract
// migrations remove what only an older version used; they run after that version is
// gone. breaking migrations change the shape of rows (a column renamed or split), so
// that the previous version cannot run on the result at all: an upgrade across one
// runs the new version on a copy of the database, and each ships a Transform per table
// it changes (RegisterTransform), to carry the rows written during the upgrade from
// one side to the other. transaction=false is for CREATE INDEX CONCURRENTLY, which PostgreSQL refuses
// inside a transaction; such a file runs statement by statement (split at a semicolon
// that ends a line) and must be safe to re-run.
//
// golang-migrate and goose do the running part, but neither knows expand/contract or
// can tell a binary whether a schema written by a newer binary is still usable, which
// is what blue-green upgrades turn on; the runner is small enough to own.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

// Kinds of migration.
const (
	Expand   = "expand"
	Contract = "contract"
	Breaking = "breaking"
)

// Migration is one embedded migration.
type Migration struct {
	Version     int    `json:"version"`
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Transaction bool   `json:"transaction"`
	SQL         string `json:"-"`
	// Transforms carry rows across a breaking migration, one per table it changes
	// (RegisterTransform attaches them to embedded migrations).
	Transforms []Transform `json:"-"`
}

// AppliedMigration is a row of schema_migrations.
type AppliedMigration struct {
	Version   int       `json:"version"`
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	AppliedAt time.Time `json:"appliedAt"`
}

var (
	fileName   = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)
	headerLine = regexp.MustCompile(`^-- kubeoauth:migration kind=(expand|contract|breaking)( transaction=false)?\s*$`)
)

// Migrations returns the embedded migrations in order. It panics on a malformed file
// or a breaking migration without its transforms: that is a build defect, caught by
// the tests, and a binary that has it must not start.
func Migrations() []Migration {
	ms, err := loadMigrations()
	if err != nil {
		panic(err)
	}
	return ms
}

func loadMigrations() ([]Migration, error) {
	ms, err := parseMigrations(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	ms = append(ms, extra.migrations...)
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %04d_%s: versions must run 1, 2, 3... without gaps", m.Version, m.Name)
		}
	}
	for v := range transforms {
		if v < 1 || v > len(ms) {
			return nil, fmt.Errorf("transforms registered for migration %04d, which does not exist", v)
		}
	}
	for i := range ms {
		if ts := transforms[ms[i].Version]; len(ts) > 0 {
			ms[i].Transforms = append(append([]Transform(nil), ms[i].Transforms...), ts...)
		}
	}
	if err := ValidateMigrations(ms); err != nil {
		return nil, err
	}
	return ms, nil
}

func parseMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", e.Name())
		}
		data, err := fs.ReadFile(fsys, dir+"/"+e.Name())
		if err != nil {
			return nil, err
		}
		text := string(data)
		first, _, _ := strings.Cut(text, "\n")
		h := headerLine.FindStringSubmatch(first)
		if h == nil {
			return nil, fmt.Errorf("migration %s: first line must be "+
				"'-- kubeoauth:migration kind=expand|contract|breaking [transaction=false]'", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		out = append(out, Migration{Version: v, Name: m[2], Kind: h[1], Transaction: h[2] == "", SQL: text})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %04d_%s: versions must run 1, 2, 3... without gaps", m.Version, m.Name)
		}
	}
	return out, nil
}

// Plan is what `tokenserver migrate plan` prints: the schema range this binary can
// serve on, for the operator's upgrade planning.
type Plan struct {
	// Latest is the newest schema version this binary knows.
	Latest int `json:"latest"`
	// MinSchema is the oldest schema this binary can serve on: every expand and
	// breaking migration it knows must be applied; its own contract migrations need
	// not be.
	MinSchema int `json:"minSchema"`
	// ReadsWrites says that the binary serves any schema from MinSchema on whose
	// migrations beyond Latest (written by a newer binary) are all expand.
	ReadsWrites string      `json:"readsWrites"`
	Migrations  []Migration `json:"migrations"`
}

// NewPlan describes migrations (Migrations() in production).
func NewPlan(ms []Migration) Plan {
	p := Plan{Migrations: ms, ReadsWrites: "schema versions >= minSchema; newer versions only if every migration after latest is expand"}
	for _, m := range ms {
		p.Latest = m.Version
		if m.Kind == Expand || m.Kind == Breaking {
			p.MinSchema = m.Version
		}
	}
	return p
}

// Upgrade modes of an UpgradePlan: the operator's dataMode values, and Refused.
const (
	// ModeShared: the new version runs beside the old one on the same database, after
	// its expand migrations; its contract migrations wait until the old one is gone.
	ModeShared = "Shared"
	// ModeCopy: the new version needs a schema the old one cannot run on, so it must
	// run on a copy of the database.
	ModeCopy = "Copy"
	// ModeRefused: the new version cannot run on this database at all.
	ModeRefused = "Refused"
)

// maxReason is the length status.upgrade.plan.reason accepts.
const maxReason = 1024

// UpgradePlan is what `tokenserver migrate plan` reports against a database: how a
// binary with these migrations can take over from the version serving on it. Its
// JSON is the contract with the operator (internal/upgrade.PlanResult).
type UpgradePlan struct {
	Mode string `json:"mode"`
	// SchemaFrom is the latest migration applied to the database (0: none).
	SchemaFrom int `json:"schemaFrom"`
	// SchemaTo is the latest migration this binary knows.
	SchemaTo int    `json:"schemaTo"`
	Reason   string `json:"reason"`
}

// PlanUpgrade decides how a binary with migrations ms takes over a database that has
// applied these migrations, from a serving version whose migrations are unknown. It
// simulates `migrate up --expand-only`: the pending migrations are applied in order
// until the first contract one, which waits until the old version is gone; the binary
// must then be able to serve on the result.
func PlanUpgrade(ms []Migration, applied []AppliedMigration) UpgradePlan {
	return PlanUpgradeFrom(ms, applied, 0)
}

// PlanUpgradeFrom is PlanUpgrade knowing servingSchema, the latest migration the
// serving version knows (its `migrate plan` latest; 0: unknown). A pending contract
// migration up to servingSchema is the serving version's own, left behind by a
// contract step that failed or has not run yet: that version serves on the schema
// after it (it is the schema it was built for), so it runs first, before the new
// version's expand migrations. A pending contract beyond servingSchema, or any when
// servingSchema is unknown, waits until the old version is gone, and so does every
// migration after it.
func PlanUpgradeFrom(ms []Migration, applied []AppliedMigration, servingSchema int) UpgradePlan {
	p := UpgradePlan{SchemaTo: NewPlan(ms).Latest}
	have := map[int]bool{}
	for _, a := range applied {
		have[a.Version] = true
		p.SchemaFrom = max(p.SchemaFrom, a.Version)
	}
	after := append([]AppliedMigration(nil), applied...)
	var catchUp, expand, deferred []string
	for _, m := range ms {
		if have[m.Version] {
			continue
		}
		name := fmt.Sprintf("%04d_%s", m.Version, m.Name)
		switch {
		case len(deferred) > 0:
			// Behind a deferred contract migration nothing runs before promotion.
			deferred = append(deferred, name)
		case m.Kind == Expand:
			expand = append(expand, name)
			after = append(after, AppliedMigration{Version: m.Version, Name: m.Name, Kind: m.Kind})
		case m.Kind == Contract && m.Version <= servingSchema:
			catchUp = append(catchUp, name)
			after = append(after, AppliedMigration{Version: m.Version, Name: m.Name, Kind: m.Kind})
		case m.Kind == Contract:
			deferred = append(deferred, name)
		default:
			// A breaking migration (or any kind the old version cannot run after): the
			// new version gets a copy migrated in full, the old one keeps the original.
			p.Mode = ModeCopy
			p.Reason = fmt.Sprintf("migration %s (%s) changes the schema so that the running version cannot serve on it: "+
				"the new version needs a copy of the database, migrated in full, with the rows written meanwhile carried "+
				"over by its transforms", name, m.Kind)
			return p.bounded()
		}
	}
	if err := CheckSchema(ms, after); err != nil {
		var missing *missingMigration
		if errors.As(err, &missing) && len(deferred) > 0 {
			// What it lacks sits behind a contract migration the serving version may
			// not survive.
			p.Mode = ModeCopy
			if servingSchema == 0 {
				p.Reason = fmt.Sprintf("this version needs %s, which comes after contract migration %s, not applied; "+
					"the serving version's schema is unknown, so it may be older and unable to serve once that has run: "+
					"the new version needs a copy of the database (if %s is the serving version's own, "+
					"plan with --serving-schema to run it first)", missing.name, deferred[0], deferred[0])
			} else {
				p.Reason = fmt.Sprintf("this version needs %s, which comes after contract migration %s, not applied; "+
					"the serving version (schema %d) does not know that migration and cannot serve once it has run, "+
					"so the new version needs a copy of the database", missing.name, deferred[0], servingSchema)
			}
			return p.bounded()
		}
		p.Mode = ModeRefused
		p.Reason = err.Error()
		return p.bounded()
	}
	p.Mode = ModeShared
	var says []string
	if len(catchUp) > 0 {
		says = append(says, fmt.Sprintf("contract migrations %s of the serving version (schema %d), not applied yet, run first",
			strings.Join(catchUp, ", "), servingSchema))
	}
	switch {
	case len(expand) > 0:
		says = append(says, "expand migrations "+strings.Join(expand, ", ")+" run while the old version serves")
	case len(catchUp) == 0 && len(deferred) == 0:
		says = append(says, fmt.Sprintf("no migration to apply: this version serves on the schema as it is (version %d)", p.SchemaFrom))
	default:
		says = append(says, "no expand migration to apply")
	}
	if len(deferred) > 0 {
		says = append(says, "contract migrations "+strings.Join(deferred, ", ")+" wait until the old version is gone")
	}
	p.Reason = strings.Join(says, "; ")
	return p.bounded()
}

func (p UpgradePlan) bounded() UpgradePlan {
	if len(p.Reason) > maxReason {
		p.Reason = p.Reason[:maxReason-len("…")] + "…"
	}
	return p
}

// missingMigration: the schema lacks a migration the binary needs.
type missingMigration struct{ name string }

func (e *missingMigration) Error() string {
	return "database schema lacks migration " + e.name + " that this token server needs: run `tokenserver migrate up`"
}

// SchemaError says why a binary cannot serve on a database's schema.
type SchemaError struct {
	Reason  string
	missing *missingMigration
}

func (e *SchemaError) Error() string { return e.Reason }

// Unwrap tells a schema that lacks a migration from one a newer binary contracted.
func (e *SchemaError) Unwrap() error {
	if e.missing == nil {
		return nil
	}
	return e.missing
}

// CheckSchema tells whether a binary with migrations ms can serve on a database that
// has applied these migrations; nil means it can.
func CheckSchema(ms []Migration, applied []AppliedMigration) error {
	plan := NewPlan(ms)
	have := map[int]AppliedMigration{}
	for _, a := range applied {
		have[a.Version] = a
	}
	if err := divergence(ms, applied); err != nil {
		return err
	}
	for _, m := range ms {
		if (m.Kind == Expand || m.Kind == Breaking) && m.Version <= plan.MinSchema {
			if _, ok := have[m.Version]; !ok {
				missing := &missingMigration{name: fmt.Sprintf("%04d_%s", m.Version, m.Name)}
				return &SchemaError{Reason: missing.Error(), missing: missing}
			}
		}
	}
	for _, a := range applied {
		if a.Version > plan.Latest && a.Kind != Expand {
			return &SchemaError{Reason: fmt.Sprintf(
				"database schema has %s migration %04d_%s, written by a newer token server, which this one (schema %d) "+
					"cannot serve on: run that version or a newer one",
				a.Kind, a.Version, a.Name, plan.Latest)}
		}
	}
	return nil
}

// divergence reports a migration the database applied under a number this binary
// gives another migration: a build branched off before that migration was written.
// Matched by number alone, the database would look migrated to a binary whose own
// migration never ran.
func divergence(ms []Migration, applied []AppliedMigration) error {
	for _, a := range applied {
		if a.Version < 1 || a.Version > len(ms) {
			continue
		}
		if m := ms[a.Version-1]; m.Name != a.Name {
			return &SchemaError{Reason: fmt.Sprintf(
				"database schema has migration %04d_%s where this token server has %04d_%s: the two builds' "+
					"migrations diverge, and this one's never ran; run a version whose migrations match the database's",
				a.Version, a.Name, m.Version, m.Name)}
		}
	}
	return nil
}

const schemaTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    kind       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`

// migrateLockID is the advisory lock held while migrating, so that two migration Jobs
// (or a Job and a developer) never run the same migration twice.
const migrateLockID = 0x6b756265_6f617574 // "kubeoaut"

// Applied lists the migrations recorded in the database.
func Applied(ctx context.Context, db interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}) ([]AppliedMigration, error) {
	if _, err := db.ExecContext(ctx, schemaTable); err != nil {
		return nil, err
	}
	return readApplied(ctx, db)
}

func readApplied(ctx context.Context, db interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}) ([]AppliedMigration, error) {
	rows, err := db.QueryContext(ctx, `SELECT version, name, kind, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []AppliedMigration
	for rows.Next() {
		var a AppliedMigration
		if err := rows.Scan(&a.Version, &a.Name, &a.Kind, &a.AppliedAt); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// ReadApplied is Applied without creating schema_migrations: it reads an empty
// database as one with no migration, and changes nothing (for planning).
func ReadApplied(ctx context.Context, db *sql.DB) ([]AppliedMigration, error) {
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		return nil, nil
	}
	return readApplied(ctx, db)
}

// MigrateOptions limits what Migrate applies.
type MigrateOptions struct {
	// To stops after this version; 0 means the latest.
	To int
	// ExpandOnly stops before the first contract migration (blue-green: contract runs
	// after the old version is gone), except the serving version's own, and before
	// the first breaking one (which runs only on a copy).
	ExpandOnly bool
	// ServingSchema is the latest migration the serving version knows (0: unknown).
	// With ExpandOnly, its contract migrations still pending run (PlanUpgradeFrom).
	ServingSchema int
	// LockTimeout bounds how long a migration's statement waits for a lock
	// (PostgreSQL's lock_timeout); 0 means DefaultLockTimeout. A migration may raise it
	// for itself with its own SET lock_timeout.
	LockTimeout time.Duration
	// LockRetries is how many times a migration that timed out on a lock is tried
	// again; 0 means DefaultLockRetries, negative none.
	LockRetries int
	// LockRetryWait is the wait before the first retry, doubled for each next one;
	// 0 means a second.
	LockRetryWait time.Duration
	// Log receives one line per migration applied or retried; may be nil.
	Log func(format string, args ...any)
}

// Migrations run while a token server serves on the same tables. A statement that
// waits for a lock (an ALTER TABLE behind a long transaction: a pg_dump, a report)
// also makes every later statement on that table queue behind it, token writes
// included, for as long as it waits. So every migration waits at most LockTimeout for
// a lock, gives up, lets the queue drain and tries again: token writes stall for at
// most LockTimeout at a time, never for the length of the other transaction.
const (
	DefaultLockTimeout = 5 * time.Second
	DefaultLockRetries = 5
)

// Migrate applies the pending migrations of ms in order and returns those it applied.
func Migrate(ctx context.Context, db *sql.DB, ms []Migration, opts MigrateOptions) ([]Migration, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	// Poll rather than block in pg_advisory_lock: a session blocked in a statement
	// holds a snapshot, and CREATE INDEX CONCURRENTLY in the lock holder waits for
	// every snapshot to go, so blocking waiters would deadlock it.
	for {
		var locked bool
		if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, int64(migrateLockID)).Scan(&locked); err != nil {
			return nil, err
		}
		if locked {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	defer func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrateLockID))
	}()
	// The connection goes back to the pool afterwards: it must not keep our timeout.
	defer func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), `RESET lock_timeout`) }()
	if err := ValidateMigrations(ms); err != nil {
		return nil, err
	}
	applied, err := Applied(ctx, conn)
	if err != nil {
		return nil, err
	}
	if err := divergence(ms, applied); err != nil {
		return nil, err
	}
	done := map[int]bool{}
	for _, a := range applied {
		done[a.Version] = true
	}
	var ran []Migration
	for _, m := range ms {
		if done[m.Version] {
			continue
		}
		if opts.To > 0 && m.Version > opts.To || opts.ExpandOnly && m.Kind == Contract && m.Version > opts.ServingSchema {
			break
		}
		// A breaking migration never runs where the old version serves: only on a
		// copy, migrated without ExpandOnly.
		if opts.ExpandOnly && m.Kind == Breaking {
			break
		}
		start := time.Now()
		if err := applyRetrying(ctx, conn, m, opts); err != nil {
			return ran, &MigrationError{Version: m.Version, Name: m.Name, Err: err}
		}
		if opts.Log != nil {
			opts.Log("applied %04d_%s (%s) in %s", m.Version, m.Name, m.Kind, time.Since(start).Round(time.Millisecond))
		}
		ran = append(ran, m)
	}
	return ran, nil
}

// applyRetrying applies m with opts' lock timeout, again after a wait each time it
// timed out on a lock. A transactional migration rolled back whole; a
// non-transactional one runs again from its first statement, which the file rules
// already require to be safe.
func applyRetrying(ctx context.Context, conn *sql.Conn, m Migration, opts MigrateOptions) error {
	return retryOnLock(ctx, conn, fmt.Sprintf("%04d_%s", m.Version, m.Name), opts, func() error { return apply(ctx, conn, m) })
}

// retryOnLock runs fn on conn with opts' lock timeout, again after a wait each time
// it timed out on a lock; what names fn in the log.
func retryOnLock(ctx context.Context, conn *sql.Conn, what string, opts MigrateOptions, fn func() error) error {
	timeout, retries, wait := opts.LockTimeout, opts.LockRetries, opts.LockRetryWait
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	if retries == 0 {
		retries = DefaultLockRetries
	}
	if wait <= 0 {
		wait = time.Second
	}
	for try := 0; ; try++ {
		// Before every try: a migration's own SET or RESET lock_timeout outlives it on
		// this session.
		if _, err := conn.ExecContext(ctx, fmt.Sprintf(`SET lock_timeout = %d`, timeout.Milliseconds())); err != nil {
			return err
		}
		err := fn()
		var pqErr *pq.Error
		if !errors.As(err, &pqErr) || pqErr.Code != lockNotAvailable {
			return err
		}
		if try >= retries {
			return fmt.Errorf("waited %s for a lock %d times, another transaction holds it (see pg_locks); "+
				"try again when it has ended: %w", timeout, try+1, err)
		}
		if opts.Log != nil {
			opts.Log("%s: no lock within %s (%s), retrying in %s", what, timeout, pqErr.Message, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// lockNotAvailable is PostgreSQL's lock_not_available, what lock_timeout raises.
const lockNotAvailable = "55P03"

const recordMigration = `INSERT INTO schema_migrations (version, name, kind) VALUES ($1, $2, $3)`

func apply(ctx context.Context, conn *sql.Conn, m Migration) error {
	if !m.Transaction {
		for _, stmt := range statements(m.SQL) {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%w\n  in: %s", err, stmt)
			}
		}
		_, err := conn.ExecContext(ctx, recordMigration, m.Version, m.Name, m.Kind)
		return err
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		_ = tx.Rollback()
		return err
	}
	if _, err := tx.ExecContext(ctx, recordMigration, m.Version, m.Name, m.Kind); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// statements splits a non-transactional migration at semicolons that end a line,
// dropping comment-only chunks.
func statements(text string) []string {
	var out []string
	for _, chunk := range strings.Split(text, ";\n") {
		var code []string
		for _, line := range strings.Split(chunk, "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "--") {
				code = append(code, line)
			}
		}
		if len(code) > 0 {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(strings.Join(code, "\n")), ";"))
		}
	}
	return out
}

// ErrSchema is returned by Open when the schema cannot be served on.
var ErrSchema = errors.New("unusable database schema")

// ExitMigrationFailed is the exit code of `tokenserver migrate up` when PostgreSQL
// refused a migration's SQL in a way that running it again cannot change: the
// migration Jobs fail at once on it (their podFailurePolicy) instead of retrying
// for minutes, so that an upgrade with a broken migration stops while the old
// version serves. Other failures (the database unreachable) exit 1 and are retried.
const ExitMigrationFailed = 3

// MigrationError is a migration that failed as it ran.
type MigrationError struct {
	Version int
	Name    string
	Err     error
}

func (e *MigrationError) Error() string {
	return fmt.Sprintf("migration %04d_%s: %v", e.Version, e.Name, e.Err)
}

func (e *MigrationError) Unwrap() error { return e.Err }

// Deterministic reports whether PostgreSQL refused the migration for a reason that
// another run would meet again (its SQL, the data it meets), as opposed to a lost
// connection, exhausted resources, a shutdown, a lock or a serialization conflict.
func (e *MigrationError) Deterministic() bool {
	var pe *pq.Error
	if !errors.As(e.Err, &pe) {
		return false
	}
	switch pe.Code.Class() {
	case "08", "40", "53", "55", "57", "58", "XX":
		return false
	}
	return true
}

// isLockTimeout says whether err is lock_timeout's.
func isLockTimeout(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == lockNotAvailable
}
