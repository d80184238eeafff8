// Package reaper makes sure that processes a test starts (etcd, kube-apiserver,
// PostgreSQL) and their temp dirs do not outlive the test binary, even when it panics,
// times out or is killed: a leftover etcd or postgres breaks the next run.
//
// A test normally stops what it started; the reaper is the safety net for the exits
// that skip cleanup. It is a small shell process that polls for the test binary and,
// once it is gone, kills the processes it was told about and removes their dirs.
package reaper

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Reaper watches the current process on behalf of some children.
type Reaper struct {
	cmd *exec.Cmd
}

// Target is one process to kill, with the signal that stops it cleanly and fast, and
// whether to signal its whole process group.
type Target struct {
	PID    int
	Signal string // as kill(1) names it: KILL, QUIT, TERM
	Group  bool
}

// Watch starts a reaper that, when this process exits without calling Stop, signals the
// targets (then SIGKILLs them a few seconds later) and removes dirs.
func Watch(targets []Target, dirs []string) (*Reaper, error) {
	var kills, lasts strings.Builder
	for _, t := range targets {
		id := strconv.Itoa(t.PID)
		if t.Group {
			id = "-- -" + id
		}
		fmt.Fprintf(&kills, "kill -%s %s 2>/dev/null; ", t.Signal, id)
		fmt.Fprintf(&lasts, "kill -KILL %s 2>/dev/null; ", id)
	}
	var rm strings.Builder
	for _, d := range dirs {
		rm.WriteString(" " + shellQuote(d))
	}
	script := fmt.Sprintf(`while kill -0 %d 2>/dev/null; do sleep 0.5; done; %s sleep 3; %s`,
		os.Getpid(), kills.String(), lasts.String())
	if rm.Len() > 0 {
		script += "rm -rf" + rm.String()
	}
	cmd := exec.Command("/bin/sh", "-c", script) // #nosec G204 -- built from PIDs and our own temp dirs
	// Its own process group: a Ctrl-C to the test must not kill the reaper before the
	// test is gone.
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting reaper: %w", err)
	}
	return &Reaper{cmd: cmd}, nil
}

// Stop ends the reaper; call it after stopping the targets yourself.
func (r *Reaper) Stop() {
	if r == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
