// Package headless gives tests a real headless browser: Debian's Chromium driven by
// chromedp, with a fresh profile, stopped with every process it started and its
// profile removed when the test ends. The page tests of the token server and the
// end-to-end consent test use it.
package headless

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium starts headless Chromium for one test and returns a chromedp context on it,
// which ends after a minute at the latest. extra adds flags, such as the pin of a
// test's own TLS certificate (ignore-certificate-errors-spki-list).
func Chromium(t testing.TB, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("headless Chromium is needed for the page tests (apt-get install chromium): %v", err)
	}
	// The profile is removed only once every Chromium process is gone: its helpers
	// (zygote, crash handler) outlive the browser process chromedp waits for and went
	// on writing into the profile while t.TempDir's cleanup removed it.
	// Its temporary files go there too (TMPDIR): Chromium keeps its singleton socket
	// in a directory of its own under TMPDIR, which it removes only when it exits
	// cleanly, and a test's Chromium is killed, so /tmp filled with them.
	dir, err := os.MkdirTemp("", "kubeoauth-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	profile, tmp := filepath.Join(dir, "profile"), filepath.Join(dir, "tmp")
	for _, d := range []string{profile, tmp} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var pgid int
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(profile), chromedp.WindowSize(900, 1000),
		chromedp.Env("TMPDIR=" + tmp),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			// Its own process group, so that the cleanup can end all of it; and killed
			// with the test binary, as chromedp does by default.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		}),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(opts, extra...)...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() {
		if b := chromedp.FromContext(ctx).Browser; b != nil && b.Process() != nil {
			pgid = b.Process().Pid
		}
		cancelTimeout()
		cancel()
		cancelAlloc()
		if pgid > 0 {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			for deadline := time.Now().Add(10 * time.Second); syscall.Kill(-pgid, 0) == nil; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Errorf("Chromium's process group %d still runs 10s after SIGKILL", pgid)
					break
				}
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing Chromium's profile: %v", err)
		}
	})
	return ctx
}
