package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The operator makes and checks signing keys but never serves OAuth nor opens the
// token server's database: linking fosite or the store would grow its image and its
// attack surface for nothing, and an import added for one helper does it silently.
func TestOperatorLinksNoTokenServer(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("this test lists the operator's imports with the go tool: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output() // #nosec G204 -- fixed arguments
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/ory/fosite",
		"github.com/lib/pq",
		"github.com/kubeoauth/kubeoauth/internal/oauth",
		"github.com/kubeoauth/kubeoauth/internal/store",
		"github.com/kubeoauth/kubeoauth/internal/tokenserver",
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f+"/") {
				t.Errorf("cmd/manager links %s", pkg)
			}
		}
	}
}
