package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A real go test run of a throwaway module: one test that always passes, one that
// fails every other round (a file it flips says which), one package whose TestMain
// fails. The tally must name exactly the failures, with their rounds, and keep their
// output.
func TestRoundsTallyFailures(t *testing.T) {
	mod := t.TempDir()
	flip := filepath.Join(mod, "flip")
	write := func(name, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(mod, name)), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mod, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.test/shaken\n\ngo 1.26\n")
	write("a/a_test.go", `package a

import (
	"os"
	"testing"
)

func TestSteady(t *testing.T) {}

func TestFlaky(t *testing.T) {
	if _, err := os.Stat(`+"`"+flip+"`"+`); err == nil {
		_ = os.Remove(`+"`"+flip+"`"+`)
		t.Fatal("flaked: the flip file was there")
	}
	_ = os.WriteFile(`+"`"+flip+"`"+`, nil, 0o600)
}
`)
	write("b/b_test.go", `package b

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	fmt.Println("setup failed: no database")
	os.Exit(1)
}

func TestNeverRuns(t *testing.T) {}
`)
	t.Chdir(mod)
	out := t.TempDir()
	tl := newTally()
	for round := 1; round <= 3; round++ {
		if _, err := runRound(context.Background(), round, []string{"./..."}, filepath.Join(out, "round"), tl); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]int{
		"example.test/shaken/a.TestSteady": 0,
		"example.test/shaken/a.TestFlaky":  1, // passes in round 1, fails in 2, passes in 3
		"example.test/shaken/a":            0, // its failure is TestFlaky's
		"example.test/shaken/b":            3, // TestMain fails every round
	} {
		if tl.runs[name] != 3 {
			t.Errorf("%s ran in %d rounds, want 3", name, tl.runs[name])
		}
		if tl.fails[name] != want {
			t.Errorf("%s failed %d times, want %d", name, tl.fails[name], want)
		}
	}
	if got := tl.failedIn["example.test/shaken/a.TestFlaky"]; len(got) != 1 || got[0] != 2 {
		t.Errorf("TestFlaky failed in rounds %v, want [2]", got)
	}
	kept, err := os.ReadFile(filepath.Join(out, "round", "example.test_shaken_a.TestFlaky.log"))
	if err != nil || !strings.Contains(string(kept), "flaked: the flip file was there") {
		t.Errorf("the failed test's output was not kept: %q, %v", kept, err)
	}
	kept, err = os.ReadFile(filepath.Join(out, "round", "example.test_shaken_b.log"))
	if err != nil || !strings.Contains(string(kept), "setup failed: no database") {
		t.Errorf("the failed package's output was not kept: %q, %v", kept, err)
	}
	sum := tl.summary(0, out)
	if !strings.Contains(sum, "3/3   example.test/shaken/b") || !strings.Contains(sum, "1/3   example.test/shaken/a.TestFlaky  rounds [2]") {
		t.Errorf("summary does not list the failures by count:\n%s", sum)
	}
}
