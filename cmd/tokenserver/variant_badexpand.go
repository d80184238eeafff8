//go:build badexpand

// The badexpand build is a token server whose one extra expand migration fails: its
// plan says Shared (an expand migration only), and `migrate up --expand-only` then
// fails, as a migration that meets data it did not expect would. An upgrade to it
// must stop at Migrating, the old version untouched and serving.
// docs/upgrades.md, "Test builds".

package main

import (
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/version"
)

func init() {
	version.Version += "-badexpand"
	postgres.RegisterMigration(postgres.Migration{
		Version: len(postgres.Migrations()) + 1, Name: "bad_expand", Kind: postgres.Expand, Transaction: true,
		SQL: `-- kubeoauth:migration kind=expand
CREATE TABLE bad_expand (id bigint REFERENCES kubeoauth_test_no_such_table (id))`,
	})
}
