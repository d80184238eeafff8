package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

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
}

// Hooks let the token server count what happens in the store without the store
// knowing about Prometheus.
type Hooks struct {
	RefreshGraceUse func()
	ChainRevoked    func()
	DatabaseError   func()
	// Event is called with the kind of each event logged (revocations, consents).
	Event func(kind string)
}

// Store is the PostgreSQL store. It implements store.Store and fosite's storage
// interfaces (see fosite.go).
type Store struct {
	db      *sql.DB
	opts    Options
	clients clientCache
	tokens  tokenCache
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
	return &Store{db: db, opts: opts}, nil
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
	if maxOpen <= 0 {
		maxOpen = 32
	}
	db.SetMaxOpenConns(maxOpen)
	db.SetMaxIdleConns(maxOpen)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}

// DB is the underlying pool.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the pool.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks the database answers, for readiness.
func (s *Store) Ping(ctx context.Context) error { return s.mapErr(s.db.PingContext(ctx)) }

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type txKey struct{}

func (s *Store) inTxCtx(ctx context.Context) bool {
	_, ok := ctx.Value(txKey{}).(*sql.Tx)
	return ok
}

// q returns the transaction fosite began on ctx (see BeginTX), or the pool.
func (s *Store) q(ctx context.Context) querier {
	if tx, ok := ctx.Value(txKey{}).(*sql.Tx); ok {
		return tx
	}
	return s.db
}

// inTx runs fn in the transaction on ctx, or in a new one committed when fn succeeds.
func (s *Store) inTx(ctx context.Context, fn func(q querier) error) error {
	if tx, ok := ctx.Value(txKey{}).(*sql.Tx); ok {
		return fn(tx)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.mapErr(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return s.mapErr(err)
	}
	return s.mapErr(tx.Commit())
}

func (s *Store) now() time.Time { return s.opts.Now().UTC() }

func (s *Store) mapErr(err error) error {
	mapped := mapErr(err)
	if errors.Is(mapped, store.ErrUnavailable) && s.opts.Hooks.DatabaseError != nil {
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
			pqErr.Code == "57P01", pqErr.Code == "57P02", pqErr.Code == "57P03": // shutdown, cannot connect now
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
