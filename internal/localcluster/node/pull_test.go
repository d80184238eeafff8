package node

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
)

// Two tags of one repository are two programs, as two builds are: an upgrade test
// that changes a tag must run the other binary.
const twoTags = `images:
- image: busybox
  command: ["/bin/sh"]
- image: example.test/app:v1
  command: ["/bin/sh", "-c", "echo I am v1"]
- image: example.test/app:v2
  command: ["/bin/sh", "-c", "echo I am v2"]
`

func logOf(t *testing.T, tn *testNode, pod string) string {
	t.Helper()
	r, err := tn.GetContainerLogs(t.Context(), tn.ns, pod, "c", api.ContainerLogOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestTwoTagsRunTwoPrograms(t *testing.T) {
	tn := startNode(t, twoTags)
	for _, tag := range []string{"v1", "v2"} {
		tn.create(t, job("app-"+tag, "example.test/app:"+tag))
	}
	for _, tag := range []string{"v1", "v2"} {
		pd := tn.waitPod(t, "app-"+tag, "app-"+tag+" ran", 20*time.Second, terminated)
		if pd.Status.Phase != corev1.PodSucceeded {
			t.Errorf("app-%s: phase %s", tag, pd.Status.Phase)
		}
		if got := logOf(t, tn, "app-"+tag); got != "I am "+tag+"\n" {
			t.Errorf("app-%s printed %q: another tag's program ran", tag, got)
		}
	}
}

// An image the node has no entry for fails as a pull does on a kubelet: the
// container waits with ErrImagePull, then ImagePullBackOff, naming the image, with
// the kubelet's Warning events, and never runs; once the image is loaded, the next
// pull finds it.
func TestUnknownTagIsNotPulled(t *testing.T) {
	tn := startNode(t, twoTags)
	const image = "example.test/app:v3"
	pd := tn.create(t, job("app-v3", image, "/bin/sh", "-c", "echo ran"))
	waiting := func(reason string) func(*corev1.Pod) error {
		return func(pd *corev1.Pod) error {
			if len(pd.Status.ContainerStatuses) != 1 {
				return fmt.Errorf("container statuses %+v", pd.Status.ContainerStatuses)
			}
			cs := pd.Status.ContainerStatuses[0]
			if cs.State.Running != nil || cs.State.Terminated != nil || cs.LastTerminationState.Terminated != nil {
				return fmt.Errorf("the container ran: %+v", cs)
			}
			if w := cs.State.Waiting; w == nil || w.Reason != reason {
				return fmt.Errorf("state %+v, want waiting %s", cs.State, reason)
			}
			return nil
		}
	}
	got := tn.waitPod(t, pd.Name, "ErrImagePull", 20*time.Second, waiting("ErrImagePull"))
	if msg := got.Status.ContainerStatuses[0].State.Waiting.Message; !strings.Contains(msg, `"`+image+`"`) {
		t.Errorf("ErrImagePull message %q does not name the image", msg)
	}
	got = tn.waitPod(t, pd.Name, "ImagePullBackOff", 20*time.Second, waiting("ImagePullBackOff"))
	if msg := got.Status.ContainerStatuses[0].State.Waiting.Message; !strings.HasPrefix(msg, `Back-off pulling image "`+image+`"`) {
		t.Errorf("ImagePullBackOff message %q", msg)
	}
	if got.Status.Phase != corev1.PodPending {
		t.Errorf("phase %s, want Pending", got.Status.Phase)
	}
	tn.waitPod(t, pd.Name, "the kubelet's events, as kubectl describe shows them", 20*time.Second, func(*corev1.Pod) error {
		var failed, backOff bool
		for _, e := range tn.events(t, pd) {
			failed = failed || e.Type == corev1.EventTypeWarning && e.Reason == "Failed" &&
				strings.HasPrefix(e.Message, `Failed to pull image "`+image+`"`)
			backOff = backOff || e.Type == corev1.EventTypeWarning && e.Reason == "Failed" && e.Message == "Error: ImagePullBackOff"
		}
		if !failed || !backOff {
			return fmt.Errorf("events %+v", tn.events(t, pd))
		}
		return nil
	})
	if _, err := tn.GetContainerLogs(t.Context(), tn.ns, pd.Name, "c", api.ContainerLogOpts{}); err == nil {
		t.Error("the container has a log: it ran")
	}

	// Loaded meanwhile (localcluster load writes such a file): the next pull runs it.
	extra := ExtraImagesDir(tn.cfg.Images)
	if err := os.MkdirAll(extra, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(extra, "v3.yaml"), []byte("images:\n- image: "+image+"\n  command: [/bin/false]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tn.waitPod(t, pd.Name, "app-v3 ran once loaded", 60*time.Second, terminated)
	if out := logOf(t, tn, pd.Name); out != "ran\n" {
		t.Errorf("app-v3 printed %q", out)
	}
}
