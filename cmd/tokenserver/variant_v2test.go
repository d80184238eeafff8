//go:build v2test

// The v2test build is a genuinely newer token server for upgrade tests: one more
// expand migration, a table, and code that writes a row to it for every access and
// refresh token issued, so that it works only once its migration ran while the
// previous version keeps working on that schema. docs/upgrades.md, "Test builds".

package main

import (
	"context"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/version"
)

func init() {
	version.Version += "-v2test"
	postgres.RegisterMigration(postgres.Migration{
		Version: len(postgres.Migrations()) + 1, Name: "token_issue_log", Kind: postgres.Expand, Transaction: true,
		SQL: `-- kubeoauth:migration kind=expand
CREATE TABLE token_issue_log (
    request_id text NOT NULL,
    kind       text NOT NULL,
    client_id  text NOT NULL,
    version    text NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now()
)`,
	})
	postgres.RegisterTokenHook(func(ctx context.Context, q postgres.Execer, kind, requestID, clientID string) error {
		if kind != postgres.TokenKindAccess && kind != postgres.TokenKindRefresh {
			return nil
		}
		_, err := q.ExecContext(ctx, `INSERT INTO token_issue_log (request_id, kind, client_id, version) VALUES ($1, $2, $3, $4)`,
			requestID, kind, clientID, version.Version)
		return err
	})
}
