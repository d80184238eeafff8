package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
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

// SetTokenRequestedAtColumn makes the store read and write fosite's RequestedAt in the
// tokens column name instead of requested_at: the seam of the v4test build, whose
// breaking migration renames that column (docs/upgrades.md, "Test builds"), so that
// it serves only on its own schema, as a real version across a breaking migration
// does. For test builds only, from init, before any store opens: the queries are
// built here once, and the ordinary build's are the same SQL as ever.
func SetTokenRequestedAtColumn(name string) {
	if !columnName.MatchString(name) {
		panic(fmt.Sprintf("SetTokenRequestedAtColumn(%q): not a plain column name", name))
	}
	tokenSelect, tokenInsert = tokenQueries(name)
	parSelect = parQuery(name)
	deviceSelect = deviceQuery(name)
}

var columnName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
