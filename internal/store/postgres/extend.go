package postgres

import (
	"context"
	"database/sql"
)

// Test builds of the token server (cmd/tokenserver built with a tag, see
// docs/upgrades.md "Test builds") are genuinely newer versions: they add migrations
// after the embedded ones and code that relies on them. They register both from an
// init function; a production build registers nothing, and these hooks cost it a
// nil-slice check.
var extra struct {
	migrations []Migration
	tokenHooks []TokenHook
}

// Execer runs a statement, on the transaction a token is stored in when there is one.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// TokenHook runs after each token row is written, with the same transaction: an
// error fails the token's storage, so that nothing is issued.
type TokenHook func(ctx context.Context, q Execer, kind, requestID, clientID string) error

// RegisterMigration appends m to Migrations(); its version must follow the last one.
// For test builds only, from init.
func RegisterMigration(m Migration) { extra.migrations = append(extra.migrations, m) }

// RegisterTokenHook adds h to every token stored. For test builds only, from init.
func RegisterTokenHook(h TokenHook) { extra.tokenHooks = append(extra.tokenHooks, h) }

// Token kinds a TokenHook sees.
const (
	TokenKindAccess  = kindAccessToken
	TokenKindRefresh = kindRefreshToken
)
