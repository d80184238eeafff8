package main

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// flagRow is a row of docs/operator.md's flag table: | `--name` | default | meaning |.
var flagRow = regexp.MustCompile("^\\| `--([a-z0-9-]+)` \\| ([^|]*) \\|")

// An operator's flags are its configuration: a flag the docs do not list is one an
// operator of a cluster cannot find, and a row for a flag that is gone (or with a
// default the manager no longer has) tells them something false. The table in
// docs/operator.md must list every flag the manager defines, with its default, and
// nothing else.
func TestFlagTableListsEveryFlag(t *testing.T) {
	doc := filepath.Join(testenv.RepoRoot(), "docs", "operator.md")
	f, err := os.Open(doc) // #nosec G304 -- the repository's docs
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	rows := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := flagRow.FindStringSubmatch(sc.Text()); m != nil {
			if _, dup := rows[m[1]]; dup {
				t.Errorf("docs/operator.md lists --%s twice", m[1])
			}
			rows[m[1]] = strings.TrimSpace(m[2])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	// The environment must not leak into the defaults compared.
	t.Setenv("WATCH_NAMESPACES", "")
	t.Setenv("POD_NAMESPACE", "")
	var o options
	fs := newFlagSet(&o, &zap.Options{})
	fs.VisitAll(func(fl *flag.Flag) {
		cell, ok := rows[fl.Name]
		if !ok {
			t.Errorf("docs/operator.md's flag table has no row for --%s (%s)", fl.Name, fl.Usage)
			return
		}
		delete(rows, fl.Name)
		if !sameDefault(fl.DefValue, cell) {
			t.Errorf("docs/operator.md: --%s: default %q, but the manager's is %q", fl.Name, cell, fl.DefValue)
		}
	})
	for name := range rows {
		t.Errorf("docs/operator.md's flag table lists --%s, which the manager does not define", name)
	}
}

// sameDefault says whether a table cell states def: a non-empty default is written
// as itself in backticks (a duration in any spelling Go parses to the same value);
// an empty one as a parenthesized note of where the value comes from instead.
func sameDefault(def, cell string) bool {
	if def == "" {
		return strings.HasPrefix(cell, "(") && strings.HasSuffix(cell, ")")
	}
	v, open := strings.CutPrefix(cell, "`")
	v, closed := strings.CutSuffix(v, "`")
	if !open || !closed || strings.Contains(v, "`") {
		return false
	}
	if v == def {
		return true
	}
	a, errA := time.ParseDuration(v)
	b, errB := time.ParseDuration(def)
	return errA == nil && errB == nil && a == b
}
