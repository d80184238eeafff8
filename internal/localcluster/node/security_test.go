package node

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The shim is this test binary, run as `localcluster shim` is: the tests below start
// real processes under the securityContext the node derives, as root (which the
// node needs), each shim in a mount namespace of its own as `ip netns exec` gives it.
// A node the tests run (runtime_test.go) starts it as `<binary> shim <spec>`.
func TestMain(m *testing.M) {
	if spec := os.Getenv("KUBEOAUTH_TEST_SHIM"); spec != "" {
		os.Exit(Shim(spec))
	}
	if len(os.Args) == 3 && os.Args[1] == "shim" {
		os.Exit(Shim(os.Args[2]))
	}
	code := m.Run()
	stopControlPlane()
	os.Exit(code)
}

// runShim runs the command as the container c of pod, with mounts, and returns its
// output and the exit code the shim recorded.
func runShim(t *testing.T, pod *corev1.Pod, c *corev1.Container, mounts []Mount) (string, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the node's shim tests run as root, as the node does")
	}
	sec, err := security(pod, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	spec := &ShimSpec{Argv: c.Command, Env: []string{defaultPath}, Mounts: mounts, Security: sec, Hostname: podHostname(pod),
		ExitFile: filepath.Join(dir, "exit-c"), Scratch: filepath.Join(dir, "scratch", "c")}
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	specPath := filepath.Join(dir, "spec-c.json")
	if err := os.WriteFile(specPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0]) // #nosec G204 -- this test binary
	cmd.Env = append(os.Environ(), "KUBEOAUTH_TEST_SHIM="+specPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, _ := cmd.CombinedOutput()
	exit, err := os.ReadFile(spec.ExitFile) // #nosec G304 -- our temporary file
	if err != nil {
		t.Fatalf("the shim recorded no exit: %v; output: %s", err, out)
	}
	code, err := strconv.Atoi(string(exit))
	if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func nonRootPod(fsGroup *int64) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1"},
		Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true),
			RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532), FSGroup: fsGroup}}}
}

// secretVolume writes a one-file Secret volume as the node does: the file with the
// volume's mode, root-owned, then the pod's fsGroup applied.
func secretVolume(t *testing.T, mode os.FileMode, fsGroup *int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "db")
	if err := writeFiles(dir, map[string]file{"dsn": {[]byte("postgres://secret"), mode}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := setVolumeOwnership(dir, fsGroup, true, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The bug of issue 11 item 3: a Secret mounted 0440 (here 0400) root-owned is not
// readable by a process running as 65532, and fsGroup is what makes it readable.
func TestSecretReadableThroughFSGroupOnly(t *testing.T) {
	for name, tt := range map[string]struct {
		mode     os.FileMode
		fsGroup  *int64
		readable bool
	}{
		"0400, no fsGroup":    {0o400, nil, false},
		"0440, no fsGroup":    {0o440, nil, false}, // the bundled pods before the fix
		"0400, fsGroup 65532": {0o400, ptr.To[int64](65532), true},
		"0440, another group": {0o440, ptr.To[int64](1234), true}, // a supplementary group of the process
	} {
		t.Run(name, func(t *testing.T) {
			pod := nonRootPod(tt.fsGroup)
			c := &corev1.Container{Name: "c", Command: sh("id -u; cat /etc/kubeoauth-test/db/dsn")}
			out, code := runShim(t, pod, c, []Mount{{Source: secretVolume(t, tt.mode, tt.fsGroup),
				Target: "/etc/kubeoauth-test/db", ReadOnly: true}})
			if !strings.HasPrefix(out, "65532\n") {
				t.Fatalf("the process did not run as 65532: %q", out)
			}
			if got := code == 0 && strings.Contains(out, "postgres://secret"); got != tt.readable {
				t.Errorf("secret readable = %v (exit %d, output %q), want %v", got, code, out, tt.readable)
			}
			if !tt.readable && !strings.Contains(out, "Permission denied") {
				t.Errorf("want a permission error, got %q", out)
			}
		})
	}
}

// readOnlyRootFilesystem: nothing outside the writable volumes can be written, not
// even a world-writable directory of the host; the volume can. The volume is at
// /tmp, which hides the pod's own files on this machine: the shim must still record
// the exit.
func TestReadOnlyRootFilesystem(t *testing.T) {
	pod := nonRootPod(ptr.To[int64](65532))
	c := &corev1.Container{Name: "c", SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr.To(true)},
		Command: sh("f=/var/tmp/kubeoauth-ro-test-$$; touch $f 2>&1 && rm $f; touch /dev/shm/kubeoauth-ro-test-$$ && rm /dev/shm/kubeoauth-ro-test-$$ && " +
			"echo written > /tmp/ok && cat /tmp/ok")}
	tmp := filepath.Join(t.TempDir(), "tmp")
	if err := emptyDir(tmp); err != nil {
		t.Fatal(err)
	}
	if err := setVolumeOwnership(tmp, ptr.To[int64](65532), false, nil); err != nil {
		t.Fatal(err)
	}
	out, code := runShim(t, pod, c, []Mount{{Source: tmp, Target: "/tmp"}})
	if code != 0 || !strings.Contains(out, "Read-only file system") || !strings.Contains(out, "written") {
		t.Errorf("exit %d, output %q: want /var/tmp read-only, /dev/shm and the /tmp volume writable", code, out)
	}
	if b, err := os.ReadFile(filepath.Join(tmp, "ok")); err != nil || string(b) != "written\n" {
		t.Errorf("the volume holds %q, %v", b, err)
	}
	// Without it, the same process writes to the host's /var/tmp.
	c.SecurityContext = nil
	c.Command = sh("f=/var/tmp/kubeoauth-ro-test-$$; touch $f && rm $f && echo writable")
	if out, code := runShim(t, pod, c, nil); code != 0 || !strings.Contains(out, "writable") {
		t.Errorf("without readOnlyRootFilesystem: exit %d, output %q", code, out)
	}
}

// allowPrivilegeEscalation: false sets no_new_privs; dropping ALL leaves a root
// process no capability at all; by default root has a runtime's default set and a
// non-root process none.
func TestPrivileges(t *testing.T) {
	status := sh("grep -E '^(NoNewPrivs|CapEff|CapBnd|CapAmb|CapInh)' /proc/self/status")
	defaults := capMask(t, defaultCapabilities...)
	for name, tt := range map[string]struct {
		sc   *corev1.SecurityContext
		uid  int64
		want map[string]string
	}{
		"root, restricted": {sc: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			want: map[string]string{"NoNewPrivs": "1", "CapEff": "0000000000000000", "CapBnd": "0000000000000000",
				"CapAmb": "0000000000000000", "CapInh": "0000000000000000"}},
		"root, runtime defaults": {want: map[string]string{"NoNewPrivs": "0", "CapEff": defaults, "CapBnd": defaults}},
		"root, one added, one dropped": {sc: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{
			Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"CAP_CHOWN"}}},
			want: map[string]string{"CapEff": capMask(t, append(without(defaultCapabilities, "CHOWN"), "NET_ADMIN")...)}},
		"non-root keeps none effective": {uid: 65532,
			want: map[string]string{"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": defaults}},
	} {
		t.Run(name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u"},
				Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr.To(tt.uid)}}}
			c := &corev1.Container{Name: "c", SecurityContext: tt.sc, Command: status}
			if _, ok := tt.want["CapPrm"]; ok {
				c.Command = sh("grep -E '^Cap' /proc/self/status")
			}
			out, code := runShim(t, pod, c, nil)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, out)
			}
			got := map[string]string{}
			for _, line := range strings.Split(out, "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					got[k] = strings.TrimSpace(v)
				}
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %s, want %s", k, got[k], v)
				}
			}
		})
	}
}

func capMask(t *testing.T, names ...string) string {
	var m uint64
	for _, n := range names {
		c, ok := capability(n)
		if !ok {
			t.Fatalf("no capability %s", n)
		}
		m |= 1 << c
	}
	return strings.Repeat("0", 16-len(strconv.FormatUint(m, 16))) + strconv.FormatUint(m, 16)
}

func without(list []string, drop string) []string {
	var out []string
	for _, s := range list {
		if s != drop {
			out = append(out, s)
		}
	}
	return out
}

// runAsNonRoot is refused as the kubelet refuses it, with its messages; the pod
// shows it as the container's CreateContainerConfigError.
func TestRunAsNonRoot(t *testing.T) {
	root := &imageUser{0, 0}
	for name, tt := range map[string]struct {
		pod   *corev1.PodSecurityContext
		c     *corev1.SecurityContext
		image *imageUser
		err   string
	}{
		"uid 0": {pod: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](0)},
			err: `container's runAsUser breaks non-root policy (pod: "p_ns(u-1)", container: c)`},
		"the container's uid 0 wins": {pod: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000)},
			c: &corev1.SecurityContext{RunAsUser: ptr.To[int64](0)}, err: "container's runAsUser breaks non-root policy"},
		"image user root": {pod: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}, image: root,
			err: `container has runAsNonRoot and image will run as root (pod: "p_ns(u-1)", container: c)`},
		"image without a user": {c: &corev1.SecurityContext{RunAsNonRoot: ptr.To(true)},
			err: "container has runAsNonRoot and image will run as root"},
		"image user non-root":            {pod: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}, image: &imageUser{65532, 65532}},
		"runAsUser over a root image":    {pod: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](999)}, image: root},
		"root allowed without the check": {pod: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0)}},
	} {
		t.Run(name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1"},
				Spec: corev1.PodSpec{SecurityContext: tt.pod}}
			_, err := security(pod, &corev1.Container{Name: "c", SecurityContext: tt.c}, tt.image)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err %v, want %q", err, tt.err)
			}
		})
	}

	t.Run("status", func(t *testing.T) {
		p := testPod(t, corev1.RestartPolicyAlways, map[string]*containerState{})
		p.refused = map[string]string{"c": "container has runAsNonRoot and image will run as root (pod: \"p_(u)\", container: c)"}
		p.cancel() // the pod's deletion; supervise reports the refusal first
		if p.supervise(&p.st.Pod.Spec.Containers[0], false) {
			t.Fatal("a refused container succeeded")
		}
		pd := p.withStatus()
		w := pd.Status.ContainerStatuses[0].State.Waiting
		if w == nil || w.Reason != "CreateContainerConfigError" || w.Message != p.refused["c"] || pd.Status.Phase != corev1.PodPending {
			t.Errorf("status %+v, phase %s: want waiting CreateContainerConfigError with the kubelet's message", w, pd.Status.Phase)
		}
	})
}

// The user and groups a container runs as: the container's fields over the pod's,
// the image's user as the default, fsGroup and supplementalGroups as supplementary
// groups.
func TestSecurityUser(t *testing.T) {
	for name, tt := range map[string]struct {
		pod        *corev1.PodSecurityContext
		c          *corev1.SecurityContext
		image      *imageUser
		uid, gid   uint32
		groups     []uint32
		noNewPrivs bool
		readOnly   bool
	}{
		"image's user":        {image: &imageUser{65532, 65532}, uid: 65532, gid: 65532},
		"no user at all":      {},
		"pod's user, group 0": {pod: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000)}, image: &imageUser{65532, 65532}, uid: 1000},
		"container over pod": {pod: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000), RunAsGroup: ptr.To[int64](1000)},
			c: &corev1.SecurityContext{RunAsUser: ptr.To[int64](2000), RunAsGroup: ptr.To[int64](2000)}, uid: 2000, gid: 2000},
		"groups": {pod: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1), FSGroup: ptr.To[int64](5), SupplementalGroups: []int64{7, 5}},
			uid: 1, groups: []uint32{5, 7}},
		"restricted": {c: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true)},
			noNewPrivs: true, readOnly: true},
	} {
		t.Run(name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: tt.pod}}
			s, err := security(pod, &corev1.Container{Name: "c", SecurityContext: tt.c}, tt.image)
			if err != nil {
				t.Fatal(err)
			}
			if s.UID != tt.uid || s.GID != tt.gid || !reflect.DeepEqual(s.Groups, tt.groups) ||
				s.NoNewPrivs != tt.noNewPrivs || s.ReadOnlyRoot != tt.readOnly {
				t.Errorf("got %+v", s)
			}
		})
	}
	if _, err := security(&corev1.Pod{}, &corev1.Container{Name: "c", SecurityContext: &corev1.SecurityContext{
		Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_MAGIC"}}}}, nil); err == nil ||
		!strings.Contains(err.Error(), "NET_MAGIC") {
		t.Errorf("an unknown capability: %v", err)
	}
}

// Volume files and directories as the kubelet leaves them with an fsGroup.
func TestSetVolumeOwnership(t *testing.T) {
	stat := func(path string) (os.FileMode, uint32) {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode(), st.Sys().(*syscall.Stat_t).Gid
	}
	secret := secretVolume(t, 0o400, ptr.To[int64](4000))
	if mode, gid := stat(filepath.Join(secret, "dsn")); mode.Perm() != 0o440 || gid != 4000 {
		t.Errorf("secret file %v group %d, want 0440 group 4000", mode, gid)
	}
	if mode, gid := stat(secret); mode&os.ModeSetgid == 0 || gid != 4000 {
		t.Errorf("secret dir %v group %d, want setgid group 4000", mode, gid)
	}
	if mode, _ := stat(filepath.Join(secretVolume(t, 0o644, nil), "dsn")); mode.Perm() != 0o644 {
		t.Errorf("without fsGroup the mode is the volume's: %v", mode)
	}
	dir := filepath.Join(t.TempDir(), "empty")
	if err := emptyDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := setVolumeOwnership(dir, ptr.To[int64](4000), false, nil); err != nil {
		t.Fatal(err)
	}
	if mode, gid := stat(dir); mode.Perm() != 0o777 || mode&os.ModeSetgid == 0 || gid != 4000 {
		t.Errorf("emptyDir %v group %d, want 2777 group 4000", mode, gid)
	}
	// OnRootMismatch leaves a volume whose root is right alone: a data directory
	// inside keeps its 0700.
	data := filepath.Join(dir, "pgdata")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := setVolumeOwnership(dir, ptr.To[int64](4000), false, ptr.To(corev1.FSGroupChangeOnRootMismatch)); err != nil {
		t.Fatal(err)
	}
	if mode, _ := stat(data); mode.Perm() != 0o700 {
		t.Errorf("OnRootMismatch changed a file under a right root: %v", mode)
	}
	if err := setVolumeOwnership(dir, ptr.To[int64](4000), false, nil); err != nil {
		t.Fatal(err)
	}
	if mode, gid := stat(data); mode.Perm() != 0o770 || gid != 4000 {
		t.Errorf("Always: %v group %d, want 0770 group 4000", mode, gid)
	}
}

// Exec probes run as the container does: setpriv takes the same user, groups,
// bounding set and no_new_privs (every capability name included).
func TestExecProbeRunsAsTheContainer(t *testing.T) {
	for name, tt := range map[string]struct {
		sc   *corev1.SecurityContext
		want map[string]string
	}{
		"restricted": {sc: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			want: map[string]string{"Uid": "65532\t65532\t65532\t65532", "Gid": "65532\t65532\t65532\t65532", "Groups": "999",
				"NoNewPrivs": "1", "CapBnd": "0000000000000000"}},
		"privileged": {sc: &corev1.SecurityContext{Privileged: ptr.To(true)},
			want: map[string]string{"NoNewPrivs": "0", "CapEff": "0000000000000000"}},
	} {
		t.Run(name, func(t *testing.T) {
			pod := nonRootPod(ptr.To[int64](999))
			sec, err := security(pod, &corev1.Container{Name: "c", SecurityContext: tt.sc}, nil)
			if err != nil {
				t.Fatal(err)
			}
			args := append(setprivArgs(sec), "cat", "/proc/self/status")
			out, err := exec.Command(args[0], args[1:]...).CombinedOutput() // #nosec G204 -- the test's own command
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			got := map[string]string{}
			for _, line := range strings.Split(string(out), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					got[k] = strings.TrimSpace(v)
				}
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

// An image's entrypoint is a host path here; a volume mounted over its directory (an
// emptyDir at /tmp over a checkout under /tmp, where CI may clone) must not hide it,
// as a real image's files are never hidden by the container's volumes. The script
// runs, as the pod's user, and sees the volume where its directory was.
func TestEntrypointUnderAVolume(t *testing.T) {
	top := t.TempDir()
	for _, d := range []string{filepath.Dir(top), top} { // the pod's user walks to the image, as to /usr/bin
		if err := os.Chmod(d, 0o755); err != nil { // #nosec G302
			t.Fatal(err)
		}
	}
	image := filepath.Join(top, "image")
	if err := os.Mkdir(image, 0o755); err != nil { // #nosec G301 -- an image's directory
		t.Fatal(err)
	}
	entry := filepath.Join(image, "entry.sh")
	script := "#!/bin/sh\necho \"entrypoint ran as $(id -u); volume holds: $(ls -A " + image + ")\"\n"
	if err := os.WriteFile(entry, []byte(script), 0o755); err != nil { // #nosec G306 -- an executable
		t.Fatal(err)
	}
	vol := filepath.Join(t.TempDir(), "vol")
	if err := emptyDir(vol); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "from-the-volume"), nil, 0o644); err != nil { // #nosec G306
		t.Fatal(err)
	}
	pod := nonRootPod(ptr.To[int64](65532))
	c := &corev1.Container{Name: "c", Command: []string{entry}}
	out, code := runShim(t, pod, c, []Mount{{Source: vol, Target: image}})
	if code != 0 || !strings.Contains(out, "entrypoint ran as 65532; volume holds: from-the-volume") {
		t.Errorf("exit %d, output %q: want the entrypoint run as 65532 with the volume over its directory", code, out)
	}
}

// A container's host name is its pod's, as a kubelet gives it (programs name
// themselves by it: controller-runtime's leader election records it as the Lease's
// holder, which `helm test` checks); the machine's stays as it was.
func TestHostnameIsThePodName(t *testing.T) {
	before, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 62) + "-b"
	for name, tt := range map[string]struct {
		pod  *corev1.Pod
		want string
	}{
		"the pod's name": {&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kubeoauth-manager-6b986dd997-jj5mf", Namespace: "ns", UID: "u-1"}},
			"kubeoauth-manager-6b986dd997-jj5mf"},
		"spec.hostname": {&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1"},
			Spec: corev1.PodSpec{Hostname: "db"}}, "db"},
		"a name over 63 characters, cut": {&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: long, Namespace: "ns", UID: "u-1"}},
			strings.Repeat("a", 62)},
	} {
		t.Run(name, func(t *testing.T) {
			c := &corev1.Container{Name: "c", Command: sh("cat /proc/sys/kernel/hostname")}
			out, code := runShim(t, tt.pod, c, nil)
			if code != 0 || out != tt.want+"\n" {
				t.Errorf("the container's host name: %q (exit %d), want %q", out, code, tt.want)
			}
		})
	}
	if after, err := os.Hostname(); err != nil || after != before {
		t.Errorf("the machine's host name changed from %q to %q (%v)", before, after, err)
	}
}
