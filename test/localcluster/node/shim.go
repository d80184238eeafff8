package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The shim is what a container runtime's shim is: one process per container, started
// by the node as `ip netns exec <pod namespace> <this tool> shim <spec file>`, so it
// runs in the pod's network namespace and in a mount namespace of its own. It puts
// the pod's volumes at their mount paths, starts the container's command, waits for
// it and writes its exit code to a file. It runs in its own session, so it and the
// container outlive a restart of the node, which then re-adopts them.

// ShimSpec is what the shim runs.
type ShimSpec struct {
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
	Dir      string   `json:"dir,omitempty"`
	Mounts   []Mount  `json:"mounts"`
	ExitFile string   `json:"exitFile"`
	// Scratch is a directory of the pod's where the shim keeps what it needs to
	// shadow a directory (see shadow).
	Scratch string `json:"scratch"`
}

// Mount is one volume mount: Source (a file or directory on this machine) at Target.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Shim runs the spec in specPath; it is the `shim` subcommand. It returns the exit
// code for the shim's own exit.
func Shim(specPath string) int {
	data, err := os.ReadFile(specPath) // #nosec G304 -- the node's own file
	if err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		return 128
	}
	var spec ShimSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		return 128
	}
	code, err := shim(&spec)
	if err != nil {
		// What the container's status shows: 128, the code of a container that
		// could not start, not the 137 of one killed before it recorded its exit.
		fmt.Fprintln(os.Stderr, "shim:", err)
		code = 128
	}
	if err := writeExit(spec.ExitFile, code); err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
	}
	return code
}

func writeExit(path string, code int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(code)), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func shim(spec *ShimSpec) (int, error) {
	for _, m := range spec.Mounts {
		if err := mount(m, spec.Scratch); err != nil {
			return 0, fmt.Errorf("mounting %s at %s: %w", m.Source, m.Target, err)
		}
	}
	argv0, err := lookPath(spec.Argv[0], spec.Env)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(argv0, spec.Argv[1:]...) // #nosec G204 -- the pod's command, which is the point
	cmd.Env, cmd.Dir = spec.Env, spec.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	// The node signals the session's process group, which reaches the container
	// directly; the shim only has to outlive it.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return 0, err
		}
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return exit.ExitCode(), nil
	}
	return 0, nil
}

// lookPath finds the command in the container's PATH, as a runtime does.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, e := range env {
		if path, ok := strings.CutPrefix(e, "PATH="); ok {
			for _, d := range filepath.SplitList(path) {
				p := filepath.Join(d, name)
				if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
					return p, nil
				}
			}
		}
	}
	return exec.LookPath(name)
}

// mount binds the source at the target inside the shim's mount namespace.
func mount(m Mount, scratch string) error {
	src, err := os.Stat(m.Source)
	if err != nil {
		return err
	}
	if err := ensureMountPoint(m.Target, src.IsDir(), scratch); err != nil {
		return err
	}
	if err := unix.Mount(m.Source, m.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if m.ReadOnly {
		return unix.Mount("", m.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, "")
	}
	return nil
}

// ensureMountPoint makes target exist without changing the host's file system: a
// missing path is created inside a tmpfs laid over its deepest existing ancestor,
// with that ancestor's entries bound back into the tmpfs, so /etc keeps its files
// when /etc/kubeoauth/keys is mounted.
func ensureMountPoint(target string, dir bool, scratch string) error {
	if _, err := os.Lstat(target); err == nil {
		return nil
	}
	ancestor := filepath.Dir(target)
	for {
		if _, err := os.Stat(ancestor); err == nil {
			break
		}
		ancestor = filepath.Dir(ancestor)
	}
	// The scratch directory, made here, holds the shadowed originals (see shadow).
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return err
	}
	// Compared as the kernel sees them: no relative paths, no symlinks (/var/run).
	realAncestor, err := filepath.EvalSymlinks(ancestor)
	if err != nil {
		return err
	}
	realScratch, err := filepath.EvalSymlinks(scratch)
	if err == nil {
		realScratch, err = filepath.Abs(realScratch)
	}
	if err != nil {
		return err
	}
	if err := shadowable(target, realAncestor, realScratch); err != nil {
		return err
	}
	if err := shadow(ancestor, scratch); err != nil {
		return fmt.Errorf("shadowing %s: %w", ancestor, err)
	}
	if dir {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	return mountPointFile(target)
}

// mountPointFile creates an empty file to bind a file over, in the shim's tmpfs.
// O_EXCL: never truncate what is there. Its mode does not matter: the bind shows
// the source's.
func mountPointFile(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600) // #nosec G304 -- in our tmpfs
	if err != nil {
		return err
	}
	return f.Close()
}

// shadowable refuses a tmpfs over / or over a directory that holds the scratch
// directory: it would hide the very bind it is filled from.
func shadowable(target, ancestor, scratch string) error {
	if ancestor == "/" || strings.HasPrefix(filepath.Clean(scratch)+"/", strings.TrimSuffix(ancestor, "/")+"/") {
		return fmt.Errorf("mountPath %s: %s does not exist on this node and %s cannot be shadowed here; "+
			"mount under a directory that exists (such as /mnt or /var/lib)", target, filepath.Dir(target), ancestor)
	}
	return nil
}

// shadow lays a writable tmpfs over dir that shows the same entries: the original
// directory is bound to a scratch path, the tmpfs mounted, and each entry recreated
// (symlinks) or bound back (files, directories).
func shadow(dir, scratch string) error {
	orig, err := os.MkdirTemp(scratch, "shadow-")
	if err != nil {
		return err
	}
	if err := unix.Mount(dir, orig, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=755"); err != nil {
		return err
	}
	entries, err := os.ReadDir(orig)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := rebind(filepath.Join(orig, e.Name()), filepath.Join(dir, e.Name()), e); err != nil {
			return err
		}
	}
	return nil
}

func rebind(from, to string, e os.DirEntry) error {
	switch {
	case e.Type()&os.ModeSymlink != 0:
		link, err := os.Readlink(from)
		if err != nil {
			return err
		}
		return os.Symlink(link, to)
	case e.IsDir():
		if err := os.Mkdir(to, 0o755); err != nil {
			return err
		}
	default:
		if err := mountPointFile(to); err != nil {
			return err
		}
	}
	return unix.Mount(from, to, "", unix.MS_BIND|unix.MS_REC, "")
}
