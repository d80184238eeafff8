// Package boundary lets a package's tests state what it must not link, so that an
// import added for one helper cannot quietly pull a whole subsystem across a line the
// layout draws (fosite into the operator, the admin API's wire types into the store).
package boundary

import (
	"os/exec"
	"strings"
	"testing"
)

// Forbid fails t when the package in the current directory depends on any of
// forbidden (an import path, or a prefix of one ending at a path element): through
// any chain of imports when deep, else only through its own imports.
func Forbid(t *testing.T, deep bool, forbidden ...string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("listing imports needs the go tool: %v", err)
	}
	args := []string{"list", "-f", `{{join .Imports "\n"}}`, "."}
	if deep {
		args = []string{"list", "-deps", "."}
	}
	out, err := exec.Command(goTool, args...).Output() // #nosec G204 -- fixed arguments
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f+"/") {
				t.Errorf("this package links %s", pkg)
			}
		}
	}
}
