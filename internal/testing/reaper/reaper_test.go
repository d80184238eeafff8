package reaper

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestReapsAfterParentDies runs a child test binary that starts a sleeper under a reaper
// and exits without cleaning up; the sleeper and its dir must be gone soon after.
func TestReapsAfterParentDies(t *testing.T) {
	if os.Getenv("REAPER_CHILD") == "1" {
		sleeper := exec.Command("sleep", "600")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := Watch([]Target{{PID: sleeper.Process.Pid, Signal: "TERM"}}, []string{os.Getenv("REAPER_DIR")}); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(os.Getenv("REAPER_PIDFILE"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Exit(0) // exit the way a panic or timeout would: no cleanup
	}

	dir := t.TempDir()
	victimDir := filepath.Join(dir, "victim")
	if err := os.Mkdir(victimDir, 0o700); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "pid")
	child := exec.Command(os.Args[0], "-test.run=^TestReapsAfterParentDies$")
	child.Env = append(os.Environ(), "REAPER_CHILD=1", "REAPER_DIR="+victimDir, "REAPER_PIDFILE="+pidFile)
	if out, err := child.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid := atoi(string(raw))

	deadline := time.Now().Add(10 * time.Second)
	for {
		_, statErr := os.Stat(victimDir)
		alive := syscall.Kill(pid, 0) == nil && !isZombie(pid)
		if !alive && os.IsNotExist(statErr) {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("after the parent exited: process %d alive=%v, dir exists=%v", pid, alive, statErr == nil)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func isZombie(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true // gone
	}
	// The state follows the parenthesised command name.
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' && i+2 < len(stat) {
			return stat[i+2] == 'Z'
		}
	}
	return false
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
