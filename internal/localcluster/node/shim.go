package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
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
	// Security is who the process runs as and with which privileges; nil (a spec
	// written before the node enforced it) runs it as root with every capability.
	Security *Security `json:"security,omitempty"`
	// Hostname is the container's host name, in a UTS namespace of its own: the
	// pod's name, as a kubelet gives it (podHostname). Programs name themselves by
	// it: controller-runtime's leader election records it as the Lease's holder.
	// Empty (a spec written before) keeps the machine's.
	Hostname string `json:"hostname,omitempty"`
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
	data, err := os.ReadFile(specPath) // #nosec G304 G703 -- the node's own file
	if err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		return 128
	}
	var spec ShimSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		return 128
	}
	// The exit file is written through a private copy of its directory's mount,
	// taken before anything is mounted: a volume at /tmp would hide the directory,
	// and a read-only root would refuse the write.
	exitDir, err := unix.OpenTree(unix.AT_FDCWD, filepath.Dir(spec.ExitFile), unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, "shim: exit file:", err)
		return 128
	}
	code, err := shim(&spec)
	if err != nil {
		// What the container's status shows: 128, the code of a container that
		// could not start, not the 137 of one killed before it recorded its exit.
		fmt.Fprintln(os.Stderr, "shim:", err)
		code = 128
	}
	if err := writeExit(exitDir, filepath.Base(spec.ExitFile), code); err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
	}
	return code
}

func writeExit(dir int, name string, code int) error {
	fd, err := unix.Openat(dir, name+".tmp", unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name) // #nosec G115 -- a descriptor
	if _, err := f.WriteString(strconv.Itoa(code)); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return unix.Renameat(dir, name+".tmp", dir, name)
}

func shim(spec *ShimSpec) (int, error) {
	entry := openEntrypoint(spec.Argv[0])
	if entry != nil {
		defer func() { _ = entry.Close() }()
	}
	if err := mountVolumes(spec); err != nil {
		return 0, err
	}
	argv0, err := lookPath(spec.Argv[0], spec.Env)
	if err != nil {
		return 0, err
	}
	var extra []*os.File
	if entry != nil && hidden(argv0, entry) {
		// A volume now covers the image's file: run the copy opened before, which the
		// child has as descriptor 3 (a script's interpreter reads it there too).
		argv0, extra = "/proc/self/fd/3", []*os.File{entry}
	}
	cmd := exec.Command(argv0, spec.Argv[1:]...) // #nosec G204 -- the pod's command, which is the point
	cmd.ExtraFiles = extra
	cmd.Env, cmd.Dir = spec.Env, spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/" // an image without WORKDIR
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	// The node signals the session's process group, which reaches the container
	// directly; the shim only has to outlive it.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if spec.Hostname != "" {
		// A namespace belongs to a thread, as the bounding set below does: the
		// container is forked from this one.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			return 0, fmt.Errorf("a UTS namespace for the host name: %w", err)
		}
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return 0, fmt.Errorf("host name %s: %w", spec.Hostname, err)
		}
	}
	if sec := spec.Security; sec != nil {
		// The bounding set and no_new_privs belong to a thread: the container is
		// forked from this one, which is never handed back to the runtime.
		runtime.LockOSThread()
		if err := restrict(sec); err != nil {
			return 0, err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: sec.UID, Gid: sec.GID, Groups: sec.Groups}}
	}
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

// openEntrypoint opens an image's command given by its path, before the volumes are
// mounted. Here an image's files are host paths (the image map), and a volume can be
// mounted over them — an emptyDir at /tmp hides a checkout under /tmp, where CI may
// clone — while a real image's files are the container's root, under its volumes.
// Nil when there is nothing to open.
func openEntrypoint(argv0 string) *os.File {
	if !filepath.IsAbs(argv0) {
		return nil
	}
	f, err := os.Open(argv0) // #nosec G304 -- the image map's entrypoint
	if err != nil {
		return nil // the exec below reports it
	}
	return f
}

// hidden reports whether path no longer names the file opened as f.
func hidden(path string, f *os.File) bool {
	want, err := f.Stat()
	if err != nil {
		return false
	}
	got, err := os.Stat(path)
	return err != nil || !os.SameFile(got, want)
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

// mountVolumes binds the volumes at their targets, parents before children (as
// containerd orders them), and makes the rest read-only if the root is to be.
// Sources and the scratch directory are opened first and reached through their
// descriptors: a volume at /tmp must not hide the pod's own files under /tmp.
func mountVolumes(spec *ShimSpec) error {
	mounts := slices.Clone(spec.Mounts)
	slices.SortStableFunc(mounts, func(a, b Mount) int { return depth(a.Target) - depth(b.Target) })
	scratch, err := openScratch(spec.Scratch)
	if err != nil {
		return err
	}
	sources := make([]*os.File, len(mounts))
	for i, m := range mounts {
		if sources[i], err = os.OpenFile(m.Source, unix.O_PATH|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("volume source %s: %w", m.Source, err)
		}
	}
	var writable []string
	for i, m := range mounts {
		if err := mount(m, sources[i], scratch); err != nil {
			return fmt.Errorf("mounting %s at %s: %w", m.Source, m.Target, err)
		}
		if !m.ReadOnly {
			writable = append(writable, m.Target)
		}
	}
	// Until here the descriptors' paths are in use; a collected *os.File closes its.
	runtime.KeepAlive(sources)
	runtime.KeepAlive(scratch.f)
	if spec.Security != nil && spec.Security.ReadOnlyRoot {
		return readOnlyRoot(writable)
	}
	return nil
}

// readOnlyRoot makes every mount of the namespace read-only but the writable
// volumes (and what is mounted under them), /dev, /proc and /sys, which a runtime
// gives a container of its own: what readOnlyRootFilesystem does to an image's
// root, for a container whose root is this machine's.
func readOnlyRoot(writable []string) error {
	keep := []string{"/dev", "/proc", "/sys"}
	for _, w := range writable {
		// mountinfo has the paths as the kernel resolved them (/run, not /var/run).
		real, err := filepath.EvalSymlinks(w)
		if err != nil {
			return err
		}
		keep = append(keep, real)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		point := unescapeMountPoint(fields[4])
		if slices.ContainsFunc(keep, func(k string) bool { return under(point, k) }) {
			continue
		}
		err := unix.MountSetattr(unix.AT_FDCWD, point, unix.AT_SYMLINK_NOFOLLOW, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
		// EINVAL: the path now leads elsewhere than to that mount (one mounted
		// over it, or over a parent); what nothing reaches needs no change.
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("making %s read-only: %w", point, err)
		}
	}
	return nil
}

func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// unescapeMountPoint undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPoint(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// restrict limits the calling thread, and so the container forked from it, to
// sec: no new privileges if asked, nothing in the ambient or inheritable sets, a
// bounding set of sec.Capabilities. The thread keeps its own effective
// capabilities, which it needs to switch to the container's user.
func restrict(sec *Security) error {
	if sec.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clearing ambient capabilities: %w", err)
	}
	last, err := lastCapability()
	if err != nil {
		return err
	}
	for c := 0; c <= last; c++ {
		if slices.Contains(sec.Capabilities, c) {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil { // #nosec G115 -- small
			return fmt.Errorf("dropping capability %d: %w", c, err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	return unix.Capset(&hdr, &data[0])
}

// lastCapability is the highest capability this kernel knows.
func lastCapability() (int, error) {
	data, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

func depth(path string) int { return strings.Count(filepath.Clean(path), "/") }

// scratchDir is the pod's scratch directory, made before the volumes are mounted,
// and the path that reaches it through a descriptor after they are.
type scratchDir struct {
	real string // as the kernel sees it, for shadowable
	path string // /proc/self/fd/N
	f    *os.File
}

func openScratch(dir string) (*scratchDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// Compared as the kernel sees them: no relative paths, no symlinks (/var/run).
	real, err := filepath.EvalSymlinks(dir)
	if err == nil {
		real, err = filepath.Abs(real)
	}
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) // #nosec G304 -- the pod's scratch directory
	if err != nil {
		return nil, err
	}
	return &scratchDir{real: real, path: fdPath(f), f: f}, nil
}

// fdPath names an open file in a way that survives mounts over its path. The file
// must stay open, which it does: the shim keeps every one until it exits.
func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// mount binds the source at the target inside the shim's mount namespace.
func mount(m Mount, source *os.File, scratch *scratchDir) error {
	src, err := source.Stat()
	if err != nil {
		return err
	}
	if err := ensureMountPoint(m.Target, src.IsDir(), scratch); err != nil {
		return err
	}
	if err := unix.Mount(fdPath(source), m.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
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
func ensureMountPoint(target string, dir bool, scratch *scratchDir) error {
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
	// Compared as the kernel sees them: no relative paths, no symlinks (/var/run).
	realAncestor, err := filepath.EvalSymlinks(ancestor)
	if err != nil {
		return err
	}
	if err := shadowable(target, realAncestor, scratch.real); err != nil {
		return err
	}
	// The scratch directory holds the shadowed originals (see shadow).
	if err := shadow(ancestor, scratch.path); err != nil {
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
