package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// Options configure a Store.
type Options struct {
	// RefreshGracePeriod is how long a rotated refresh token still works (0–5m).
	RefreshGracePeriod time.Duration
	// MaxOpenConns bounds the pool; 0 means 32.
	MaxOpenConns int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Hooks observe events for metrics; nil fields are skipped.
	Hooks Hooks
	// ClientCacheTTL bounds how long a replica trusts a cached client when a change
	// notification was lost; 0 means DefaultClientCacheTTL.
	ClientCacheTTL time.Duration
	// ListenDSN is where Follow listens for other replicas' changes; empty means the
	// DSN the store is opened with.
	ListenDSN string
	// Log gets the listener's warnings; nil discards them.
	Log *slog.Logger
	// CommitTimeout bounds each wait for a COMMIT (see commit); 0 means
	// DefaultCommitTimeout.
	CommitTimeout time.Duration
}

// DefaultCommitTimeout bounds every COMMIT of the store: a group-commit batch
// (groupCommit.timeout), a transaction's COMMIT (commit), a statement outside a
// transaction (autocommit). With a synchronous standby that stalls, a COMMIT waits for
// it as long as nobody cancels the wait: without a bound, a request of a client that
// sets no timeout would wait forever, holding a pool connection and the locks of its
// transaction. A COMMIT whose wait was cut short fails its request (errCommitCut).
const DefaultCommitTimeout = 30 * time.Second

// Hooks let the token server count what happens in the store without the store
// knowing about Prometheus.
type Hooks struct {
	RefreshGraceUse func()
	ChainRevoked    func()
	DatabaseError   func()
	// Event is called with the kind of each event logged (revocations, consents).
	Event func(kind store.EventKind)
	// GroupCommit observes the batches token writes are committed in.
	GroupCommit GroupCommitHooks
}

// Store is the PostgreSQL store. It implements store.Store and fosite's storage
// interfaces (see fosite.go).
type Store struct {
	db        *sql.DB
	opts      Options
	listenDSN string
	clients   clientCache
	tokens    tokenCache
	group     *groupCommit
	// batchSQL are the group commit's two statements (batchInsert, batchRotate),
	// built once: tokenInsert's column names are final when a store opens.
	batchSQL  struct{ insert, rotate string }
	stmts     sync.Map // query → *sql.Stmt, see queryRow
	testHooks testHooks
	// following is set once Follow runs, listening while its listener is known to
	// hear every NOTIFY: a replica that follows caches only while it listens.
	following, listening atomic.Bool
}

// caching says whether the caches may be read and filled: a store that follows the
// others' NOTIFYs must hear them, or a token revoked on another replica (or the
// other color, sharing the database) stays active here until the cache's TTL. A
// store that never follows (a single process, the tests of the caches) caches.
func (s *Store) caching() bool { return !s.following.Load() || s.listening.Load() }

// testHooks let tests stop a reader between its read and its cache fill, to force
// the interleavings a busy server produces by chance (export_test.go).
type testHooks struct {
	afterClientRead func(id string)
	afterTokenRead  func(signature string)
}

var _ store.Store = (*Store)(nil)

// Open connects to dsn and checks that this binary can serve on the database's
// schema; a schema it cannot use is an error wrapping ErrSchema that says what to do.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	db, err := OpenDB(dsn, opts.MaxOpenConns)
	if err != nil {
		return nil, err
	}
	applied, err := Applied(ctx, db)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("reading the schema version: %w", mapErr(err))
	}
	if err := CheckSchema(Migrations(), applied); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: %w", ErrSchema, err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ClientCacheTTL <= 0 {
		opts.ClientCacheTTL = DefaultClientCacheTTL
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = DefaultCommitTimeout
	}
	listenDSN := opts.ListenDSN
	if listenDSN == "" {
		listenDSN = dsn
	}
	s := &Store{db: db, opts: opts, listenDSN: listenDSN}
	s.batchSQL.insert, s.batchSQL.rotate = batchInsert(1), batchRotate()
	s.group = &groupCommit{flush: s.flushUnits, maxBatch: groupCommitMaxBatch, maxFlushes: groupCommitMaxFlushes,
		timeout: opts.CommitTimeout, hooks: opts.Hooks.GroupCommit, lockWaiters: make(chan struct{}, max(1, poolSize(opts.MaxOpenConns)/2))}
	return s, nil
}

// OpenDB opens a pool on dsn without checking the schema (for migrations).
func OpenDB(dsn string, maxOpen int) (*sql.DB, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database DSN: %w", err)
	}
	// One round trip per query instead of two (lib/pq otherwise prepares, waits, then
	// executes). Parameters then travel in binary, so jsonb values are passed as text.
	cfg.BinaryParameters = true
	connector, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("database DSN: %w", err)
	}
	db := sql.OpenDB(connector)
	maxOpen = poolSize(maxOpen)
	db.SetMaxOpenConns(maxOpen)
	db.SetMaxIdleConns(maxOpen)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}

// poolSize is the pool's connections for Options.MaxOpenConns.
func poolSize(maxOpen int) int {
	if maxOpen <= 0 {
		return 32
	}
	return maxOpen
}

// DB is the underlying pool.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the pool.
func (s *Store) Close() error {
	s.stmts.Range(func(_, v any) bool { _ = v.(*sql.Stmt).Close(); return true })
	return s.db.Close()
}

// queryRow is q(ctx).QueryRowContext for the reads every token request makes: outside
// a transaction it runs query as a prepared statement (prepared once per connection),
// so that PostgreSQL parses and plans it once per connection instead of at each call,
// which cost it more than running it.
func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if s.inTxCtx(ctx) {
		return s.q(ctx).QueryRowContext(ctx, query, args...)
	}
	stmt, err := s.prepare(ctx, query) //nolint:sqlclosecheck // the store's, closed by Close
	if err != nil {
		return s.db.QueryRowContext(ctx, query, args...)
	}
	return stmt.QueryRowContext(ctx, args...)
}

// prepare prepares query once for the store (database/sql prepares it again on each
// connection that runs it); Close closes it.
func (s *Store) prepare(ctx context.Context, query string) (*sql.Stmt, error) {
	if stmt, ok := s.stmts.Load(query); ok {
		return stmt.(*sql.Stmt), nil
	}
	prepared, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	stmt, raced := s.stmts.LoadOrStore(query, prepared)
	if raced {
		defer func() { _ = prepared.Close() }() // another caller's is kept
	}
	return stmt.(*sql.Stmt), nil
}

// Ping checks the database answers, for readiness.
func (s *Store) Ping(ctx context.Context) error { return s.mapErr(ctx, s.db.PingContext(ctx)) }

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type txKey struct{}

// txState is a transaction and what to do once it commits. Cache invalidations wait
// for the commit: dropped earlier, an entry could be refilled with the old row by a
// reader that runs between the drop and the commit.
//
// fosite's transactions (BeginTX) start with no database transaction: the writes that
// can wait for the commit (new tokens, a refresh-token rotation) gather in writes and
// go to the group commit at Commit (groupcommit.go), with other requests' writes, in
// one round trip. The first statement that cannot wait — a read, another write —
// begins the database transaction and runs the gathered writes first, in order, so
// that the transaction sees its own writes as ever.
type txState struct {
	tx *sql.Tx
	// txCtx is tx's context, under the request's; cancel ends it, and with it the
	// wait of tx's COMMIT (see commit).
	txCtx  context.Context
	cancel context.CancelFunc
	after  []func()
	writes *writeUnit // not nil while no database transaction was begun
	err    error      // of beginning it late; the transaction then fails as a whole
	// ended says how a transaction that never began in the database ended: it must
	// then behave as database/sql's ended one (sql.ErrTxDone), so that a second
	// Commit neither writes again nor reports a failed write as stored, a Commit
	// after Rollback writes nothing, and no later statement on the context begins a
	// transaction that nobody ends.
	ended txEnd
}

type txEnd int

const (
	txOpen txEnd = iota
	txCommitted
	txCommitFailed
	txRolledBack
)

// deferring reports whether writes on ctx can wait for the commit.
func deferring(ctx context.Context) (*txState, bool) {
	st, ok := txFrom(ctx)
	return st, ok && st.writes != nil && len(extra.tokenHooks) == 0
}

// begin begins st's database transaction, if not yet, and runs the writes gathered
// until now.
func (s *Store) begin(ctx context.Context, st *txState) error {
	if st.err != nil || st.writes == nil {
		return st.err
	}
	writes := st.writes
	st.writes = nil
	if err := s.beginTx(ctx, st); err != nil {
		st.err = err
		return st.err
	}
	tx := st.tx
	for _, sig := range writes.rotations {
		if err := s.rotate(ctx, tx, sig); err != nil {
			st.err = s.mapErr(ctx, err)
			return st.err
		}
	}
	for _, row := range writes.tokens {
		if _, err := tx.ExecContext(ctx, tokenInsert, row.args...); err != nil {
			st.err = s.unitErr(ctx, err, []tokenWrite{row})
			return st.err
		}
	}
	return nil
}

// failedQuerier stands for a transaction that could not begin: every statement fails
// with that error, and none reaches the database.
type failedQuerier struct {
	db  *sql.DB
	err error
}

func (f failedQuerier) ExecContext(context.Context, string, ...any) (sql.Result, error) {
	return nil, f.err
}

func (f failedQuerier) QueryContext(context.Context, string, ...any) (*sql.Rows, error) {
	return nil, f.err
}

// QueryRowContext cannot make a *sql.Row hold f.err: it asks the pool on a context
// already canceled, which fails before taking a connection. The transaction's own
// error is what Commit returns.
func (f failedQuerier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	return f.db.QueryRowContext(canceled, query, args...)
}

func txFrom(ctx context.Context) (*txState, bool) {
	st, ok := ctx.Value(txKey{}).(*txState)
	return st, ok
}

func (s *Store) inTxCtx(ctx context.Context) bool {
	_, ok := txFrom(ctx)
	return ok
}

// q returns the transaction on ctx (fosite's, see BeginTX, or inTx's), or the pool,
// whose statements each commit on their own (autocommit).
func (s *Store) q(ctx context.Context) querier {
	if st, ok := txFrom(ctx); ok {
		if err := s.begin(ctx, st); err != nil {
			return failedQuerier{db: s.db, err: err}
		}
		return st.tx
	}
	return autocommit{s}
}

// beginTx begins st's database transaction on a context of its own under ctx: the
// request's context still ends it, and commit can end its COMMIT's wait.
func (s *Store) beginTx(ctx context.Context, st *txState) error {
	txCtx, cancel := context.WithCancel(ctx)
	tx, err := s.db.BeginTx(txCtx, nil)
	if err != nil {
		cancel()
		return s.mapErr(ctx, err)
	}
	st.tx, st.txCtx, st.cancel = tx, txCtx, cancel
	return nil
}

// commit commits st's transaction, waiting for the COMMIT no longer than the commit
// timeout, and runs st's after functions once it may have committed.
//
// database/sql cannot cancel a COMMIT by itself: Tx.Commit takes no context. lib/pq
// watches the context the transaction began with until its COMMIT returns, and when
// that context ends, asks PostgreSQL to cancel what the connection is doing. A COMMIT
// waiting for a synchronous standby is then cut short: PostgreSQL keeps the
// transaction committed on the primary and reports success (with a WARNING nobody
// reads), and Tx.Commit returns nil. That is what ending txCtx does here, when the
// timeout passes or the request's context ends, whichever is first; and why a COMMIT
// that returned after txCtx ended fails with errCommitCut rather than answering with
// what it may not have replicated. The connection lib/pq cancelled on is closed, not
// returned to the pool.
func (s *Store) commit(st *txState) error {
	defer st.cancel()
	timer := time.AfterFunc(s.opts.CommitTimeout, st.cancel)
	err := st.tx.Commit()
	timer.Stop()
	if err != nil {
		// Counted whatever ended txCtx: a COMMIT cut by the timeout is the database's.
		return s.mapErr(context.Background(), err)
	}
	// Cache invalidations: the transaction committed, at least on the primary, so
	// the entries it changed must go either way.
	for _, f := range st.after {
		f()
	}
	if st.txCtx.Err() != nil {
		return errCommitCut
	}
	return nil
}

// rollback rolls st's transaction back and releases its context.
func (s *Store) rollback(st *txState) error {
	defer st.cancel()
	return st.tx.Rollback()
}

// autocommit is the pool for statements outside a transaction. Each is a transaction
// of its own, whose commit waits for a synchronous standby as a COMMIT does: it is
// bounded likewise, the statement as a whole by the commit timeout (a statement that
// waits longer than that for a lock fails too), and a statement whose context ended
// before it returned fails with errCommitCut, though PostgreSQL reported success.
type autocommit struct{ s *Store }

func (a autocommit) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, a.s.opts.CommitTimeout)
	defer cancel()
	res, err := a.s.db.ExecContext(ctx, query, args...)
	if err == nil && ctx.Err() != nil {
		return nil, errCommitCut
	}
	return res, err
}

// QueryContext serves reads: a write that returns rows goes through inTx.
func (a autocommit) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return a.s.db.QueryContext(ctx, query, args...)
}

// QueryRowContext serves reads, as QueryContext.
func (a autocommit) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return a.s.db.QueryRowContext(ctx, query, args...)
}

// afterCommit runs f when the transaction on ctx commits, or now when there is none
// (the statement before it was committed on its own).
func (s *Store) afterCommit(ctx context.Context, f func()) {
	if st, ok := txFrom(ctx); ok {
		st.after = append(st.after, f)
		return
	}
	f()
}

// inTx runs fn in the transaction on ctx, or in a new one committed when fn succeeds.
// fn's ctx carries the transaction, for afterCommit.
func (s *Store) inTx(ctx context.Context, fn func(ctx context.Context, q querier) error) error {
	if st, ok := txFrom(ctx); ok {
		if err := s.begin(ctx, st); err != nil {
			return err
		}
		return fn(ctx, st.tx)
	}
	st := &txState{}
	if err := s.beginTx(ctx, st); err != nil {
		return err
	}
	if err := fn(context.WithValue(ctx, txKey{}, st), st.tx); err != nil {
		_ = s.rollback(st)
		return s.mapErr(ctx, err)
	}
	return s.commit(st)
}

func (s *Store) now() time.Time { return s.opts.Now().UTC() }

// storable reports whether PostgreSQL can hold key as text: valid UTF-8 without a NUL.
// A lookup by a key that is not (a token, client ID or request URI a caller made up)
// finds nothing, and is answered so without asking the database, which would refuse
// the query (SQLSTATE 22021) and so turn garbage into a server error: a 503 that tells
// a client to retry forever, or a revocation of garbage refused, where RFC 7009
// section 2.2 wants 200.
func storable(key string) bool {
	return utf8.ValidString(key) && !strings.ContainsRune(key, 0)
}

// mapErr maps err, from a call made for ctx, and counts a database that cannot be
// reached (Hooks.DatabaseError): not when ctx was cancelled first (a client that hung
// up), whose call fails whatever the database's health. A deadline that passed is
// counted: a database that does not answer makes calls wait until theirs.
func (s *Store) mapErr(ctx context.Context, err error) error {
	mapped := mapErr(err)
	if errors.Is(mapped, store.ErrUnavailable) && s.opts.Hooks.DatabaseError != nil && !errors.Is(ctx.Err(), context.Canceled) {
		s.opts.Hooks.DatabaseError()
	}
	return mapped
}

// mapErr marks errors that mean "the database cannot be reached" with
// store.ErrUnavailable, so callers answer 503 rather than 500.
func mapErr(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch {
		case strings.HasPrefix(string(pqErr.Code), "08"), // connection exception
			strings.HasPrefix(string(pqErr.Code), "53"),                         // insufficient resources
			pqErr.Code == "57P01", pqErr.Code == "57P02", pqErr.Code == "57P03", // shutdown, cannot connect now
			// A database cut over to another by an upgrade (the fence's guard): this
			// server's view of the fence is behind; the retry reaches the new side.
			pqErr.Code == FenceRefused:
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		return err
	}
	var netErr net.Error
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.As(err, &netErr) || errors.Is(err, sql.ErrConnDone) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

func nullTime(t time.Time) sql.NullTime { return sql.NullTime{Time: t, Valid: !t.IsZero()} }
