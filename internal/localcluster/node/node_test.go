package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

// The pure parts of the node; the node itself runs in `make test-e2e`, which needs
// root and a cluster.

func TestImageMapResolve(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "images.yaml")
	t.Setenv("BIN", "/opt/bin")
	write := func(path, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(path, `images:
- image: ghcr.io/kubeoauth/tokenserver:v0.1.0
  command: ["${BIN}/tokenserver"]
  args: ["serve"]
- image: ghcr.io/kubeoauth/tokenserver@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
  command: ["/opt/pinned/tokenserver"]
- image: postgres:15
  command: ["/pg.sh"]
  env: ["PATH=/usr/lib/postgresql/15/bin:/usr/bin"]
- image: busybox
  command: ["/bin/sh"]
- image: example.com/shell
  anyTag: true
  command: ["/bin/bash"]
`)
	// A test's build, loaded beside the map.
	write(filepath.Join(ExtraImagesDir(path), "v2.yaml"), `images:
- image: ghcr.io/kubeoauth/tokenserver:v2-test
  command: ["/opt/v2/tokenserver"]
`)
	m, err := LoadImageMap(path)
	if err != nil {
		t.Fatal(err)
	}
	digest := "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	for name, tt := range map[string]struct {
		c    corev1.Container
		argv []string
		err  bool
	}{
		"image's entrypoint and cmd": {c: corev1.Container{Image: "ghcr.io/kubeoauth/tokenserver:v0.1.0"},
			argv: []string{"/opt/bin/tokenserver", "serve"}},
		"another tag is another program": {c: corev1.Container{Image: "ghcr.io/kubeoauth/tokenserver:v2-test"},
			argv: []string{"/opt/v2/tokenserver"}},
		"a tag not pulled":     {c: corev1.Container{Image: "ghcr.io/kubeoauth/tokenserver:v0.2.0"}, err: true},
		"no tag is latest":     {c: corev1.Container{Image: "ghcr.io/kubeoauth/tokenserver"}, err: true},
		"pinned by digest":     {c: corev1.Container{Image: "ghcr.io/kubeoauth/tokenserver@" + digest}, argv: []string{"/opt/pinned/tokenserver"}},
		"digest wins over tag": {c: corev1.Container{Image: "ghcr.io/kubeoauth/tokenserver:v0.1.0@" + digest}, argv: []string{"/opt/pinned/tokenserver"}},
		"args replace cmd": {c: corev1.Container{Image: "ghcr.io/kubeoauth/tokenserver:v0.1.0", Args: []string{"migrate", "up"}},
			argv: []string{"/opt/bin/tokenserver", "migrate", "up"}},
		"command replaces entrypoint": {c: corev1.Container{Image: "docker.io/library/postgres:15", Command: []string{"pg_isready"},
			Args: []string{"-h", "127.0.0.1"}}, argv: []string{"pg_isready", "-h", "127.0.0.1"}},
		"another postgres":             {c: corev1.Container{Image: "postgres:16"}, err: true},
		"busybox is busybox:latest":    {c: corev1.Container{Image: "docker.io/busybox:latest"}, argv: []string{"/bin/sh"}},
		"anyTag":                       {c: corev1.Container{Image: "example.com/shell:5.2"}, argv: []string{"/bin/bash"}},
		"anyTag, digest":               {c: corev1.Container{Image: "example.com/shell@" + digest}, argv: []string{"/bin/bash"}},
		"unknown image":                {c: corev1.Container{Image: "nginx:1.27"}, err: true},
		"a registry port is not a tag": {c: corev1.Container{Image: "localhost:5000/postgres:15"}, err: true},
		"not a reference":              {c: corev1.Container{Image: "Tokenserver:::"}, err: true},
	} {
		t.Run(name, func(t *testing.T) {
			argv, env, _, err := m.resolve(&tt.c)
			if (err != nil) != tt.err {
				t.Fatalf("err %v, want error %v", err, tt.err)
			}
			if err != nil {
				if _, ok := isImageNotPulled(err); !ok || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.c.Image)) {
					t.Errorf("not a pull failure naming the image: %v", err)
				}
				return
			}
			if !reflect.DeepEqual(argv, tt.argv) {
				t.Errorf("argv %q, want %q", argv, tt.argv)
			}
			if len(env) == 0 || env[0] != defaultPath {
				t.Errorf("env %q does not start with the default PATH", env)
			}
		})
	}
	if _, err := LoadImageMap(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a missing image map loaded")
	}
	for name, text := range map[string]string{
		"no command":          "images:\n- image: x:1\n",
		"anyTag with a tag":   "images:\n- image: x:1\n  anyTag: true\n  command: [a]\n",
		"not a reference":     "images:\n- image: 'X Y'\n  command: [a]\n",
		"one reference twice": "images:\n- image: busybox\n  command: [a]\n- image: docker.io/library/busybox:latest\n  command: [b]\n",
	} {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		write(bad, text)
		if _, err := LoadImageMap(bad); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	// A loaded file that names an image of the map again is refused, naming both files.
	write(filepath.Join(ExtraImagesDir(path), "again.yaml"), "images:\n- image: postgres:15\n  command: [/other]\n")
	if _, err := LoadImageMap(path); err == nil || !strings.Contains(err.Error(), "again.yaml") {
		t.Errorf("a second entry for postgres:15: %v", err)
	}
}

func TestPickKeys(t *testing.T) {
	data := map[string][]byte{"a": []byte("1"), "b": []byte("2")}
	all, err := pick(data, nil, nil, nil)
	if err != nil || len(all) != 2 || all["a"].mode != 0o644 {
		t.Errorf("all keys: %v %v", all, err)
	}
	mode := int32(0o400)
	some, err := pick(data, []corev1.KeyToPath{{Key: "b", Path: "dir/b.txt", Mode: &mode}}, nil, nil)
	if err != nil || len(some) != 1 || string(some["dir/b.txt"].data) != "2" || some["dir/b.txt"].mode != 0o400 {
		t.Errorf("items: %v %v", some, err)
	}
	if _, err := pick(data, []corev1.KeyToPath{{Key: "c", Path: "c"}}, nil, nil); err == nil {
		t.Error("a missing key was not an error")
	}
	// An optional source's missing key is left out, as the kubelet leaves it.
	optional := true
	if got, err := pick(data, []corev1.KeyToPath{{Key: "c", Path: "c"}, {Key: "a", Path: "a"}}, nil, &optional); err != nil ||
		len(got) != 1 || string(got["a"].data) != "1" {
		t.Errorf("optional source with a missing key: %v %v", got, err)
	}
}

func TestFieldValue(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1",
		Labels: map[string]string{"app": "web"}}, Status: corev1.PodStatus{PodIP: "10.244.0.7"}}
	for path, want := range map[string]string{"metadata.name": "p", "metadata.namespace": "ns", "metadata.uid": "u-1",
		"status.podIP": "10.244.0.7", "status.hostIP": "10.244.0.1", "metadata.labels['app']": "web"} {
		if got, err := fieldValue(pod, path, "10.244.0.1"); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := fieldValue(pod, "spec.nope", ""); err == nil {
		t.Error("an unsupported fieldRef was not an error")
	}
}

func TestPhase(t *testing.T) {
	exited := func(code int32) *containerState {
		return &containerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}
	}
	for name, tt := range map[string]struct {
		policy corev1.RestartPolicy
		cs     *containerState
		want   corev1.PodPhase
	}{
		"not started":                   {corev1.RestartPolicyAlways, nil, corev1.PodPending},
		"running":                       {corev1.RestartPolicyAlways, &containerState{Running: true}, corev1.PodRunning},
		"exited, restarted by Always":   {corev1.RestartPolicyAlways, exited(0), corev1.PodRunning},
		"job succeeded":                 {corev1.RestartPolicyNever, exited(0), corev1.PodSucceeded},
		"job failed":                    {corev1.RestartPolicyNever, exited(1), corev1.PodFailed},
		"failed, retried by OnFailure":  {corev1.RestartPolicyOnFailure, exited(2), corev1.PodRunning},
		"succeeded, done for OnFailure": {corev1.RestartPolicyOnFailure, exited(0), corev1.PodSucceeded},
	} {
		t.Run(name, func(t *testing.T) {
			p := &pod{st: podState{Pod: &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: tt.policy,
				Containers: []corev1.Container{{Name: "c"}}}}, Containers: map[string]*containerState{}}}
			if tt.cs != nil {
				p.st.Containers["c"] = tt.cs
			}
			if got := p.phase(); got != tt.want {
				t.Errorf("phase %s, want %s", got, tt.want)
			}
		})
	}
	t.Run("init container failed under Never", func(t *testing.T) {
		p := &pod{st: podState{Pod: &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			InitContainers: []corev1.Container{{Name: "init"}}, Containers: []corev1.Container{{Name: "c"}}}},
			Containers: map[string]*containerState{"init": exited(1)}}}
		if got := p.phase(); got != corev1.PodFailed {
			t.Errorf("phase %s, want Failed: the containers will never start", got)
		}
	})
}

// testPod is a pod of a node that has not started anything.
func testPod(t *testing.T, policy corev1.RestartPolicy, containers map[string]*containerState) *pod {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	n := &Node{log: logr.Discard(), ctx: ctx, pods: map[string]*pod{}, names: map[types.NamespacedName]string{}, gone: map[string]bool{}}
	return &pod{n: n, dir: t.TempDir(), ctx: ctx, cancel: cancel, exited: map[string]chan struct{}{},
		spec: map[string]*ShimSpec{}, stopped: make(chan struct{}),
		st: podState{Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u"}, Spec: corev1.PodSpec{
			RestartPolicy: policy, Containers: []corev1.Container{{Name: "c"}}}}, Containers: containers}}
}

// A pod re-adopted after a node restart whose container had already exited for good
// is not run again (a Job's pod would otherwise run twice).
func TestFinishedContainerIsNotRunAgain(t *testing.T) {
	done := func(code int32) map[string]*containerState {
		return map[string]*containerState{"c": {Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Completed"}}}
	}
	for name, tt := range map[string]struct {
		policy corev1.RestartPolicy
		code   int32
		ok     bool
	}{
		"succeeded under Never":     {corev1.RestartPolicyNever, 0, true},
		"failed under Never":        {corev1.RestartPolicyNever, 1, false},
		"succeeded under OnFailure": {corev1.RestartPolicyOnFailure, 0, true},
	} {
		t.Run(name, func(t *testing.T) {
			p := testPod(t, tt.policy, done(tt.code))
			before := *p.st.Containers["c"].Terminated
			if ok := p.supervise(&p.st.Pod.Spec.Containers[0], false); ok != tt.ok {
				t.Errorf("supervise = %v, want %v", ok, tt.ok)
			}
			if cs := p.st.Containers["c"]; *cs.Terminated != before || cs.RestartCount != 0 || cs.Previous != nil {
				t.Errorf("the container ran again: %+v", cs)
			}
		})
	}
}

// Once a pod is being deleted nothing of it starts, so terminate cannot miss a
// process started after it looked.
func TestStartRefusedWhileDeleting(t *testing.T) {
	p := testPod(t, corev1.RestartPolicyAlways, map[string]*containerState{})
	p.spec["c"] = &ShimSpec{Argv: []string{"/bin/true"}, ExitFile: filepath.Join(p.dir, "exit-c")}
	if err := os.MkdirAll(filepath.Join(p.dir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	p.deleting = true
	if _, _, err := p.start(&p.st.Pod.Spec.Containers[0]); !errors.Is(err, errDeleting) {
		t.Fatalf("start while deleting: %v, want errDeleting", err)
	}
	if cs := p.st.Containers["c"]; cs != nil && cs.Pid != 0 {
		t.Errorf("a process was recorded: %+v", cs)
	}
}

func TestShadowable(t *testing.T) {
	for _, tt := range []struct {
		target, ancestor, scratch string
		ok                        bool
	}{
		{"/etc/kubeoauth/keys", "/etc", "/var/lib/kubeoauth/pods/u/scratch/c", true},
		{"/data", "/", "/var/lib/kubeoauth/pods/u/scratch/c", false},
		{"/tmp/new/dir", "/tmp", "/tmp/kubeoauth-local/pods/u/scratch/c", false},
		{"/tmp2/x", "/tmp2", "/tmp/kubeoauth-local/pods/u/scratch/c", true},
	} {
		err := shadowable(tt.target, tt.ancestor, tt.scratch)
		if (err == nil) != tt.ok {
			t.Errorf("shadowable(%s over %s, scratch %s) = %v, want ok %v", tt.target, tt.ancestor, tt.scratch, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "mountPath "+tt.target) {
			t.Errorf("the error does not name the mountPath: %v", err)
		}
	}
}

func TestAddressesAreKeptPerUID(t *testing.T) {
	dir := t.TempDir()
	a, err := loadAddresses(dir, "10.244.0.0/24", "10.244.0.1")
	if err != nil {
		t.Fatal(err)
	}
	first, _ := a.allocate("uid-a")
	second, _ := a.allocate("uid-b")
	again, _ := a.allocate("uid-a")
	if first != "10.244.0.2" || second != "10.244.0.3" || again != first {
		t.Fatalf("addresses %s %s %s", first, second, again)
	}
	// A restarted node reads them back.
	b, err := loadAddresses(dir, "10.244.0.0/24", "10.244.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := b.allocate("uid-b"); got != second {
		t.Errorf("after a restart uid-b has %s, want %s", got, second)
	}
	if err := b.release("uid-a"); err != nil {
		t.Fatal(err)
	}
	// Not handed out again at once (peers may still map it to the old pod), but
	// once the others have been.
	if got, _ := b.allocate("uid-c"); got != "10.244.0.4" {
		t.Errorf("the pod after a release got %s, want 10.244.0.4 (the next address, not the one just freed)", got)
	}
	small, err := loadAddresses(t.TempDir(), "10.244.1.0/29", "10.244.1.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"p2", "p3", "p4", "p5", "p6"} {
		if _, err := small.allocate(uid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := small.allocate("p7"); err == nil {
		t.Error("a full /29 handed out an address")
	}
	if err := small.release("p3"); err != nil {
		t.Fatal(err)
	}
	if got, err := small.allocate("p8"); got != "10.244.1.3" || err != nil {
		t.Errorf("after wrapping around: %s %v, want the freed 10.244.1.3", got, err)
	}
}

// A volume is updated in place: a container that has the directory bound keeps
// seeing it, with the new files.
func TestWriteFilesKeepsTheDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	if err := writeFiles(dir, map[string]file{"token": {[]byte("one"), 0o644}, "old": {[]byte("x"), 0o644}}, nil); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(dir, map[string]file{"token": {[]byte("two"), 0o600}, "sub/ca.crt": {[]byte("ca"), 0o644}}, nil); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("the volume's directory was replaced; a container bound to it would see an empty, deleted directory")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "token")); string(b) != "two" {
		t.Errorf("token = %q", b)
	}
	if st, _ := os.Stat(filepath.Join(dir, "token")); st.Mode().Perm() != 0o600 {
		t.Errorf("token mode %v", st.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, "old")); !os.IsNotExist(err) {
		t.Error("a file no longer in the volume was kept")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "sub", "ca.crt")); string(b) != "ca" {
		t.Errorf("sub/ca.crt = %q", b)
	}

	// The same content again changes nothing: a reader that watches the file (the
	// token server's users file) sees no change.
	token, err := os.Stat(filepath.Join(dir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(dir, map[string]file{"token": {[]byte("two"), 0o600}, "sub/ca.crt": {[]byte("ca"), 0o644}}, nil); err != nil {
		t.Fatal(err)
	}
	if again, err := os.Stat(filepath.Join(dir, "token")); err != nil || !os.SameFile(token, again) {
		t.Errorf("unchanged content was written again (%v)", err)
	}

	// A new set is there whole, with the fsGroup, the moment its file is: the files
	// are reached through ..data, swapped in one rename after they were written and
	// their ownership set, and nothing else is left in the directory.
	gid := int64(4242)
	if err := writeFiles(dir, map[string]file{"token": {[]byte("three"), 0o400}}, &gid); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Gid != uint32(gid) || st.Mode().Perm() != 0o440 {
		t.Errorf("token: gid %d, mode %v; want %d and 0440", sys.Gid, st.Mode().Perm(), gid)
	}
	if target, err := os.Readlink(filepath.Join(dir, "token")); err != nil || target != filepath.Join(dataLink, "token") {
		t.Errorf("token links to %q (%v), want ..data/token", target, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 3 || !slices.Contains(names, dataLink) || !slices.Contains(names, "token") {
		t.Errorf("the volume's directory holds %v, want ..data, one payload and token", names)
	}
	// A key that would replace ..data is refused, as the kubelet refuses it.
	if err := writeFiles(dir, map[string]file{"..data": {[]byte("x"), 0o644}}, nil); err == nil {
		t.Error("a file named ..data was written")
	}
}

// A pod deleted before the node was asked to create it (virtual-kubelet's workers
// can ask in that order when a pod is deleted the moment it is scheduled) never
// starts: as with the kubelet, its object is deleted with nothing to stop. Started,
// it ran with nothing left to stop it, its object Terminating for good.
func TestPodDeletedBeforeItWasCreatedNeverStarts(t *testing.T) {
	ctx := t.Context()
	pd := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "job-x", UID: "u1"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "never-pulled"}}}}
	// The API server's view, which the node deletes from; a fake because the
	// order of the two calls is what is tested, not the API.
	kube := fake.NewClientset(pd.DeepCopy())
	n := &Node{log: logr.Discard(), ctx: ctx, kube: kube, pods: map[string]*pod{}, names: map[types.NamespacedName]string{},
		gone: map[string]bool{}}
	if err := n.DeletePod(ctx, pd); !errdefs.IsNotFound(err) {
		t.Fatalf("DeletePod of a pod the node does not have: %v; want NotFound", err)
	}
	if err := n.CreatePod(ctx, pd); err != nil {
		t.Fatal(err)
	}
	if len(n.pods) != 0 {
		t.Fatalf("the node runs %d pods; want none: the pod was deleted before it was created", len(n.pods))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := kube.CoreV1().Pods("ns").Get(ctx, "job-x", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pod object is still there: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Already being deleted when the node hears of it: the same.
	pd2 := pd.DeepCopy()
	pd2.Name, pd2.UID, pd2.DeletionTimestamp = "job-y", "u2", &metav1.Time{Time: time.Now()}
	if err := n.CreatePod(ctx, pd2); err != nil || len(n.pods) != 0 {
		t.Fatalf("CreatePod of a pod being deleted: %v, %d pods running; want none", err, len(n.pods))
	}
}

// `kubectl logs -f` of a container ends, as the kubelet's does, when the container
// exits, with all it wrote: a test that follows a hook Job's pod reads the whole log
// and then returns, without a timeout of its own.
func TestFollowEndsWhenTheContainerExits(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	w, err := os.OpenFile(f.Name(), os.O_WRONLY|os.O_APPEND, 0) // #nosec G304 -- the test's own file
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	fl := &follower{ctx: t.Context(), f: f, exited: exited}
	go func() {
		_, _ = w.WriteString("deleted OAuthClient a/b\n")
		_, _ = w.WriteString("deleted TokenServer a/auth\n")
		_ = w.Close()
		close(exited)
	}()
	got, err := io.ReadAll(fl)
	if err != nil {
		t.Fatal(err)
	}
	if want := "deleted OAuthClient a/b\ndeleted TokenServer a/auth\n"; string(got) != want {
		t.Errorf("followed %q, want %q", got, want)
	}
}
