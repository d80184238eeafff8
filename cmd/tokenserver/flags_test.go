package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// The token server's flags are how it is run outside the operator (and how the
// operator runs it): docs/tokenserver.md's flag table must name every flag of
// `tokenserver serve`, as `tokenserver serve --help` prints them, and its commands
// table every `db` command.
func TestDocsListEveryServeFlagAndCommand(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "tokenserver.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	row := regexp.MustCompile("^\\| `--")
	name := regexp.MustCompile("`--([a-z0-9-]+)`")
	for _, line := range strings.Split(string(doc), "\n") {
		if !row.MatchString(line) {
			continue
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		for _, m := range name.FindAllStringSubmatch(cell, -1) {
			documented[m[1]] = true
		}
	}

	help := helpOf(t, "serve")
	flags := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(help, -1)
	if len(flags) < 20 {
		t.Fatalf("tokenserver serve --help listed %d flags:\n%s", len(flags), help)
	}
	for _, f := range flags {
		if !documented[f[1]] {
			t.Errorf("docs/tokenserver.md's flag table has no row for --%s", f[1])
		}
	}
	for _, cmd := range []string{"copy", "replay", "cutover", "cleanup"} {
		if !strings.Contains(string(doc), "| `tokenserver db "+cmd+" ") {
			t.Errorf("docs/tokenserver.md's commands table has no row for tokenserver db %s", cmd)
		}
	}
}

// helpOf is what `tokenserver <command> --help` prints (on standard output).
func helpOf(t *testing.T, command string) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	err = run(context.Background(), []string{command, "--help"}, io.Discard, io.Discard)
	os.Stdout = stdout
	_ = w.Close()
	out := <-done
	_ = r.Close()
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("tokenserver %s --help: %v", command, err)
	}
	return out
}
