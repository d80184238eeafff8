package docs_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// reasonPackages are the packages whose exported Reason* constants are condition or
// event reasons a user meets in kubectl.
var reasonPackages = []string{"api/v1alpha1", "controllers", "internal/upgrade"}

// A reason a user reads in `kubectl describe` is the key they look up in
// docs/troubleshooting.md: every exported Reason* constant the operator defines, and
// every Upgrade<Phase> the upgrades set, must appear there in backticks, so that a
// new reason without docs fails this test.
func TestTroubleshootingCoversEveryReason(t *testing.T) {
	root := testenv.RepoRoot()
	doc, err := os.ReadFile(filepath.Join(root, "docs", "troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	reasons, phases := map[string]string{}, map[string]string{}
	for _, dir := range reasonPackages {
		collectConstants(t, filepath.Join(root, dir), dir, reasons, phases)
	}
	if len(reasons) < 20 || len(phases) < 10 {
		t.Fatalf("found %d Reason constants and %d upgrade phases: is the parsing broken?", len(reasons), len(phases))
	}
	for value, where := range phases {
		reasons["Upgrade"+value] = where
	}
	for value, where := range reasons {
		if !strings.Contains(string(doc), "`"+value+"`") {
			t.Errorf("docs/troubleshooting.md does not explain the reason `%s` (%s)", value, where)
		}
	}
	t.Logf("%d reasons checked", len(reasons))
}

// collectConstants adds the string values of dir's exported constants named Reason*
// to reasons, and those of type UpgradePhase to phases, each with where it is
// defined. Test files are left out: what they define no user sees.
func collectConstants(t *testing.T, dir, rel string, reasons, phases map[string]string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs, ok := spec.(*ast.ValueSpec)
				if !ok {
					continue
				}
				phase := false
				if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "UpgradePhase" {
					phase = true
				}
				for i, name := range vs.Names {
					if i >= len(vs.Values) || !name.IsExported() {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					value, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					where := rel + "." + name.Name
					switch {
					case phase:
						phases[value] = where
					case strings.HasPrefix(name.Name, "Reason"):
						reasons[value] = where
					}
				}
			}
		}
	}
}
