// Package issuedat is the breaking migration of the v4test build of the token server
// (docs/upgrades.md, "Test builds"): tokens.requested_at renamed issued_at, with the
// row transforms that carry tokens across it and the store set to read and write the
// new name. tokens is the table every token request writes, so an upgrade to v4test
// really needs a copy of the database, its replay and its cutover carry rows through
// these transforms all the time, and neither version can serve on the other's schema.
// Only the v4test build registers it; it is a package of its own so that its store
// test runs in every `make test` without changing the store's other tests.
package issuedat

import (
	"fmt"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// Name is the migration's name; its version follows the embedded ones.
const Name = "tokens_issued_at"

// The column before and after the migration.
const (
	Before = "requested_at"
	After  = "issued_at"
)

// Migration is the breaking migration as version version, without its transforms
// (Transform; Register attaches them as a build does).
func Migration(version int) postgres.Migration {
	return postgres.Migration{
		Version: version, Name: Name, Kind: postgres.Breaking, Transaction: true,
		SQL: `-- kubeoauth:migration kind=breaking
-- A rename is only a catalog change: quick on any size of table, and the previous
-- version's every token query fails on the result.
ALTER TABLE tokens RENAME COLUMN ` + Before + ` TO ` + After,
	}
}

// Transform carries tokens rows across the migration, in either direction.
func Transform() postgres.Transform {
	return postgres.Transform{
		Table:    "tokens",
		Forward:  func(r postgres.Row) (postgres.Row, error) { return rename(r, Before, After) },
		Backward: func(r postgres.Row) (postgres.Row, error) { return rename(r, After, Before) },
	}
}

// rename moves column from to column to, the value as it is: a rename changes no
// value, so the text form (or NULL) read on one side is what the other stores.
func rename(r postgres.Row, from, to string) (postgres.Row, error) {
	v, ok := r[from]
	if !ok {
		return nil, fmt.Errorf("tokens row has no column %s", from)
	}
	if _, ok := r[to]; ok {
		return nil, fmt.Errorf("tokens row has both %s and %s", from, to)
	}
	switch v.(type) {
	case string, nil:
	default:
		return nil, fmt.Errorf("tokens.%s is %T, want its text form (a string) or nil", from, v)
	}
	out := make(postgres.Row, len(r))
	for k, val := range r {
		if k != from {
			out[k] = val
		}
	}
	out[to] = v
	return out, nil
}

// Register adds the migration after the embedded ones (and those registered before
// it) with its transforms, and points the store at the new column. For the v4test
// build, from init.
func Register() {
	version := len(postgres.Migrations()) + 1
	postgres.RegisterMigration(Migration(version))
	postgres.RegisterTransform(version, Transform())
	postgres.SetTokenRequestedAtColumn(After)
}
