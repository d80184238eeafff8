//go:build v4test

// The v4test build is a genuinely newer token server across a breaking migration, for
// Copy upgrade tests: its one extra migration renames tokens.requested_at to
// issued_at (package issuedat, with the row transforms the replay and cutover run),
// and its store reads and writes issued_at. So it cannot serve on the previous
// version's schema, nor the previous version on its: an upgrade to it needs a copy of
// the database, and every token issued during the upgrade crosses the transforms.
// docs/upgrades.md, "Test builds".

package main

import (
	"github.com/kubeoauth/kubeoauth/internal/store/postgres/issuedat"
	"github.com/kubeoauth/kubeoauth/internal/version"
)

func init() {
	version.Version += "-v4test"
	issuedat.Register()
}
