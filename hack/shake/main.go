// Command shake runs the test suite round after round, optionally beside a CPU-bound
// neighbour on every core, and prints each test that failed with how often: the way to
// find flaky tests before CI does (make shake; docs/development.md).
//
// Each round is a fresh `go test -json -count=1` of the packages, so that every
// package's TestMain (API server, PostgreSQL, token server) starts again as in CI;
// `go test -count=N` would reuse one setup for all N runs and hide start-up races.
// The output of every failed test is kept in -out, one file per round and test.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	rounds := flag.Int("rounds", 5, "how many times to run the packages")
	neighbour := flag.Bool("neighbour", false, "keep every core busy with a CPU-bound neighbour while the tests run")
	out := flag.String("out", "", "directory for the output of failed tests (default: a new temp dir)")
	testFlags := flag.String("test-flags", "", "extra flags for go test, e.g. \"-run TestX -timeout 20m\"")
	flag.Usage = func() {
		_, _ = fmt.Fprintf(flag.CommandLine.Output(), "usage: shake [flags] [packages]   (default ./...)\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	pkgs := flag.Args()
	if len(pkgs) == 0 {
		pkgs = []string{"./..."}
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "shake: -rounds must be at least 1")
		os.Exit(2)
	}
	if *out == "" {
		dir, err := os.MkdirTemp("", "kubeoauth-shake-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "shake:", err)
			os.Exit(1)
		}
		*out = dir
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *neighbour {
		defer startNeighbour(runtime.NumCPU())()
	}
	args := append(strings.Fields(*testFlags), pkgs...)
	tally := newTally()
	start := time.Now()
	for i := 1; i <= *rounds && ctx.Err() == nil; i++ {
		roundStart := time.Now()
		failed, err := runRound(ctx, i, args, filepath.Join(*out, fmt.Sprintf("round-%02d", i)), tally)
		if err != nil {
			fmt.Fprintf(os.Stderr, "shake: round %d: %v\n", i, err)
			os.Exit(1)
		}
		fmt.Printf("round %d/%d: %d failed (%s)\n", i, *rounds, len(failed), time.Since(roundStart).Round(time.Second))
		for _, f := range failed {
			fmt.Printf("  FAIL %s\n", f)
		}
	}
	fmt.Print(tally.summary(time.Since(start), *out))
	if tally.anyFailed() {
		os.Exit(1)
	}
}

// startNeighbour spins n goroutines until the returned stop is called: the load this
// machine has when CI, a build and a benchmark meet. The go test processes get the
// same share of the cores as the spinners, so they run at about half speed.
func startNeighbour(n int) (stop func()) {
	var done atomic.Bool
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			x := uint64(1)
			for !done.Load() {
				for range 1 << 16 {
					x = x*6364136223846793005 + 1442695040888963407
				}
			}
			_ = x
		})
	}
	fmt.Printf("neighbour: %d CPU-bound goroutines\n", n)
	return func() { done.Store(true); wg.Wait() }
}

// runRound runs go test once, records each test's result in tally and writes the output
// of every failed test (and of a package that failed outside any test) under dir.
func runRound(ctx context.Context, round int, args []string, dir string, tally *tally) ([]string, error) {
	// #nosec G204 -- the developer's own flags
	cmd := exec.CommandContext(ctx, "go", append([]string{"test", "-json", "-count=1"}, args...)...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	failed, perr := collect(stdout, round, dir, tally)
	werr := cmd.Wait()
	if perr != nil {
		return nil, perr
	}
	var exit *exec.ExitError
	if werr != nil && !errors.As(werr, &exit) {
		return nil, werr
	}
	if werr != nil && len(failed) == 0 {
		// go test failed but no test or package said so: a build error, say. Count it
		// so that the round is not taken for a pass.
		failed = []string{"(go test exited with " + werr.Error() + ")"}
		tally.record("(go test)", round, true)
	}
	return failed, nil
}

// event is one line of test2json's output (go doc test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// collect reads go test -json output, records results and keeps failed output.
func collect(r io.Reader, round int, dir string, tally *tally) ([]string, error) {
	output := map[string]*strings.Builder{}
	var failed []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // go test prints build output that is not JSON
		}
		name := e.Package
		if e.Test != "" {
			name += "." + e.Test
		}
		switch e.Action {
		case "output":
			b := output[name]
			if b == nil {
				b = &strings.Builder{}
				output[name] = b
			}
			b.WriteString(e.Output)
		case "pass", "fail":
			// A package fails with each of its failed tests; it counts as failed
			// itself only when none did (a TestMain, timeout or build failure).
			bad := e.Action == "fail" && (e.Test != "" || !hasFailedTest(failed, e.Package))
			tally.record(name, round, bad)
			if bad {
				failed = append(failed, name)
				if err := keep(dir, name, output[name]); err != nil {
					return nil, err
				}
			}
			delete(output, name)
		}
	}
	return failed, sc.Err()
}

func hasFailedTest(failed []string, pkg string) bool {
	return slices.ContainsFunc(failed, func(f string) bool { return strings.HasPrefix(f, pkg+".") })
}

func keep(dir, name string, b *strings.Builder) error {
	if b == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	file := strings.NewReplacer("/", "_", " ", "_").Replace(name) + ".log"
	return os.WriteFile(filepath.Join(dir, file), []byte(b.String()), 0o600)
}

// tally counts, per test, the rounds it ran in and the rounds it failed in.
type tally struct {
	runs, fails map[string]int
	failedIn    map[string][]int
	rounds      int
}

func newTally() *tally {
	return &tally{runs: map[string]int{}, fails: map[string]int{}, failedIn: map[string][]int{}}
}

func (t *tally) record(name string, round int, failed bool) {
	t.rounds = max(t.rounds, round)
	t.runs[name]++
	if failed {
		t.fails[name]++
		t.failedIn[name] = append(t.failedIn[name], round)
	}
}

func (t *tally) anyFailed() bool { return len(t.fails) > 0 }

func (t *tally) summary(took time.Duration, out string) string {
	var b strings.Builder
	tests := len(t.runs)
	fmt.Fprintf(&b, "\n%d rounds, %d tests and packages, %s\n", t.rounds, tests, took.Round(time.Second))
	if !t.anyFailed() {
		b.WriteString("no test failed\n")
		return b.String()
	}
	names := make([]string, 0, len(t.fails))
	for n := range t.fails {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		if d := t.fails[b] - t.fails[a]; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	b.WriteString("failed tests (failures/runs, rounds):\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %3d/%-3d %s  rounds %v\n", t.fails[n], t.runs[n], n, t.failedIn[n])
	}
	fmt.Fprintf(&b, "output of each failure: %s/round-NN/\n", out)
	return b.String()
}
