package pages

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The budget of Check: a template that needs more to render its samples is refused.
// html/template cannot be interrupted, and a template can loop (range over a
// number, a template calling another twice at each of forty levels) or grow a
// string by doubling it, so the only bound that holds is a process's.
const (
	CheckTimeout = 5 * time.Second
	// CheckMemory is small next to the operator pod's memory limit (256 MiB by
	// default), which the child shares: the samples of any sane template take
	// a few MiB.
	CheckMemory = 64 << 20
)

// checkStartup bounds how long the child may take to start, before its budget
// begins: a busy node may start a large binary slowly, which is no template's
// fault.
const checkStartup = 30 * time.Second

// checkChildEnv makes the process a template check (RunCheckIfChild).
const checkChildEnv = "KUBEOAUTH_PAGES_CHECK_CHILD"

// hooked is whether this binary's main calls RunCheckIfChild, without which
// Check would start a second copy of the whole program.
var hooked atomic.Bool

// RunCheckIfChild must be the first thing main (or TestMain) does in a binary that
// calls Check: in the child Check starts it runs the check and exits.
func RunCheckIfChild() {
	if os.Getenv(checkChildEnv) == "" {
		hooked.Store(true)
		return
	}
	os.Exit(runChild(os.Stdin, os.Stdout))
}

// checkResult is the child's answer: the file refused and why, or no file.
type checkResult struct {
	File  string `json:"file,omitempty"`
	Error string `json:"error,omitempty"`
}

// Check is Parse run in a child process of this binary (see RunCheckIfChild), with
// CheckTimeout and CheckMemory: the caller survives any template. A template that
// is refused, also for its budget, is a *FileError; any other error is the
// check's own failure (the child did not start, or died of something else).
func Check(ctx context.Context, overrides map[string]string) error {
	if !hooked.Load() {
		return errors.New("pages.Check: this binary's main does not call pages.RunCheckIfChild")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("template check: %w", err)
	}
	in, err := json.Marshal(overrides)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe) // #nosec G204 -- this very binary
	cmd.Env = append(os.Environ(), checkChildEnv+"=1")
	cmd.Stdin = bytes.NewReader(in)
	var stderr head
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the template check: %w", err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 4096), 64<<10)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		// Past a line too long, or once ctx is done: drain, so the child never
		// blocks on a full pipe.
		_, _ = io.Copy(io.Discard, out)
	}()
	started := time.NewTimer(checkStartup)
	defer started.Stop()
	var budget <-chan time.Time
	page := Layout
	var result *checkResult
	var why error
read:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				break read
			}
			switch verb, arg, _ := strings.Cut(l, " "); verb {
			case "ready":
				started.Stop()
				t := time.NewTimer(CheckTimeout)
				defer t.Stop()
				budget = t.C
			case "page":
				page = arg
			case "result":
				result = &checkResult{}
				if err := json.Unmarshal([]byte(arg), result); err != nil {
					result = nil
				}
			}
		case <-budget:
			why = &FileError{page, fmt.Errorf("rendering it with sample data took longer than %s", CheckTimeout)}
			break read
		case <-started.C:
			why = fmt.Errorf("the template check did not start within %s", checkStartup)
			break read
		case <-ctx.Done():
			why = ctx.Err()
			break read
		}
	}
	if why != nil {
		cancel() // kills the child
	}
	werr := cmd.Wait()
	switch {
	case why != nil:
		return why
	case werr == nil && result != nil:
		if result.File == "" {
			return nil
		}
		return &FileError{result.File, errors.New(result.Error)}
	case strings.Contains(stderr.String(), "out of memory"), strings.Contains(stderr.String(), "cannot allocate memory"),
		// The race detector's runtime, in a test binary built with -race.
		strings.Contains(stderr.String(), "ThreadSanitizer failed to allocate"):
		return &FileError{page, fmt.Errorf("rendering it with sample data used more than %d MiB", CheckMemory>>20)}
	case strings.Contains(stderr.String(), "stack overflow"):
		return &FileError{page, fmt.Errorf("rendering it with sample data nests deeper than the stack allows")}
	default:
		return fmt.Errorf("template check failed (%v): %s", werr, strings.TrimSpace(stderr.String()))
	}
}

// runChild is the child of Check: it takes its budget, reads the templates on in
// and writes its progress and result on out, a line each.
func runChild(in io.Reader, out io.Writer) int {
	// One thread, so that a check cannot take the operator's node's CPUs; a
	// bounded stack, so that deep recursion is refused fast.
	runtime.GOMAXPROCS(1)
	debug.SetMaxStack(64 << 20)
	// RLIMIT_DATA bounds the heap a Go program maps (private writable memory;
	// RLIMIT_AS would count the runtime's address space reservations, over a GiB
	// at start) on top of what this binary had already: an allocation past it is
	// a fatal "out of memory", which Check reports.
	if data, err := vmData(); err == nil {
		lim := data + CheckMemory
		_ = syscall.Setrlimit(syscall.RLIMIT_DATA, &syscall.Rlimit{Cur: lim, Max: lim})
	} else {
		fmt.Fprintln(os.Stderr, "pages check:", err)
		return 1
	}
	debug.SetMemoryLimit(CheckMemory)
	// Should the pod's memory run out all the same, the kernel kills this process
	// first, not the operator (raising one's own score needs no privilege).
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0)
	var overrides map[string]string
	if err := json.NewDecoder(io.LimitReader(in, 16<<20)).Decode(&overrides); err != nil {
		fmt.Fprintln(os.Stderr, "pages check: read templates:", err)
		return 1
	}
	_, _ = fmt.Fprintln(out, "ready")
	_, err := parse(overrides, func(name string) { _, _ = fmt.Fprintln(out, "page", name) })
	var r checkResult
	if err != nil {
		var fe *FileError
		if !errors.As(err, &fe) {
			fe = &FileError{"?", err}
		}
		r.File, r.Error = fe.Name, fe.Err.Error()
		if len(r.Error) > 4096 {
			r.Error = r.Error[:4096]
		}
	}
	b, _ := json.Marshal(r)
	_, _ = fmt.Fprintln(out, "result", string(b))
	return 0
}

// vmData is this process's VmData, in bytes.
func vmData() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmData:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmData in /proc/self/status")
}

// head keeps the first 4 KiB written to it: the start of a child's stderr, where
// the Go runtime says why it died (before the goroutines' stacks).
type head struct{ b []byte }

func (h *head) Write(p []byte) (int, error) {
	h.b = append(h.b, p[:min(len(p), max(0, 4096-len(h.b)))]...)
	return len(p), nil
}

func (h *head) String() string { return string(h.b) }
