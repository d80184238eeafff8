package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// These tests run the node's pods for real against a real kube-apiserver (envtest):
// virtual-kubelet's pod controller writes what the node reports, the shims run
// processes in network namespaces on a bridge of the test's own, and the tests read
// pods and events from the API as kubectl does. They need root, as the node does.

var (
	controlPlaneOnce sync.Once
	controlPlane     *testenv.Env
	controlPlaneErr  error
)

// clientset starts the control plane the first time a test needs it.
func clientset(t *testing.T) kubernetes.Interface {
	t.Helper()
	controlPlaneOnce.Do(func() { controlPlane, controlPlaneErr = testenv.Start() })
	if controlPlaneErr != nil {
		t.Fatal(controlPlaneErr)
	}
	return kubernetes.NewForConfigOrDie(controlPlane.Config)
}

func stopControlPlane() {
	if controlPlane != nil {
		if err := controlPlane.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}
}

// testNode is a node of its own (name, bridge, pod network, image map) running
// against the control plane; its pods are removed when the test ends.
type testNode struct {
	*Node
	kube kubernetes.Interface
	ns   string
}

// startNode runs a node whose image map is images (YAML), in a namespace of the
// test's own.
func startNode(t *testing.T, images string) *testNode {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the node's tests run as root, as the node does")
	}
	kube := clientset(t)
	dir := t.TempDir()
	imagePath := filepath.Join(dir, "images.yaml")
	if err := os.WriteFile(imagePath, []byte(images), 0o600); err != nil {
		t.Fatal(err)
	}
	// One bridge per test binary would do; one per node keeps nodes apart. The
	// pods' addresses are in a range no other network of this machine uses, and
	// no address is put on the host: the tests reach pods through the API only.
	id := strconv.Itoa(os.Getpid()%10000) + strconv.Itoa(int(nodeCount.Add(1)))
	bridge := "kot" + id
	if out, err := exec.Command("ip", "link", "add", bridge, "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("making bridge %s: %v: %s", bridge, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", bridge).Run() })
	cfg := Config{Dir: filepath.Join(dir, "node"), NodeName: "test-node-" + id, HostIP: "10.245.0.1",
		PodCIDR: "10.245.0.0/24", Bridge: bridge, APIServerPort: 6443, Images: imagePath, Self: os.Args[0],
		Log: testr.New(t)}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "pods"), 0o700); err != nil {
		t.Fatal(err)
	}
	addrs, err := loadAddresses(cfg.Dir, cfg.PodCIDR, cfg.HostIP)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadImageMap(imagePath); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: cfg.Log, ctx: ctx, kube: kube, res: &resolver{c: kube, hostIP: cfg.HostIP}, addrs: addrs,
		pods: map[string]*pod{}, names: map[types.NamespacedName]string{}, gone: map[string]bool{}}
	pc, err := n.podController(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pc.Run(ctx, 2) }()
	t.Cleanup(func() {
		// The processes outlive a stopped node (they are re-adopted): stop them.
		n.mu.Lock()
		pods := make([]*pod, 0, len(n.pods))
		for _, p := range n.pods {
			pods = append(pods, p)
		}
		n.mu.Unlock()
		for _, p := range pods {
			n.startRemoval(p)
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			n.mu.Lock()
			left := len(n.pods)
			n.mu.Unlock()
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%d pods not removed 30s after the test", left)
				break
			}
		}
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("the pod controller: %v", err)
		}
	})
	ns, err := kube.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "node-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &testNode{Node: n, kube: kube, ns: ns.Name}
}

var nodeCount atomic.Int32

// create creates the pod on this node, as the scheduler would have bound it.
func (tn *testNode) create(t *testing.T, pd *corev1.Pod) *corev1.Pod {
	t.Helper()
	pd.Namespace, pd.Spec.NodeName = tn.ns, tn.cfg.NodeName
	out, err := tn.kube.CoreV1().Pods(tn.ns).Create(t.Context(), pd, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitPod polls the pod in the API until check passes (nil), for up to timeout.
func (tn *testNode) waitPod(t *testing.T, name, what string, timeout time.Duration, check func(*corev1.Pod) error) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pd, err := tn.kube.CoreV1().Pods(tn.ns).Get(t.Context(), name, metav1.GetOptions{})
		if err == nil {
			if err = check(pd); err == nil {
				return pd
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// terminated is the check that the pod's one container has exited for good.
func terminated(pd *corev1.Pod) error {
	if pd.Status.Phase != corev1.PodSucceeded && pd.Status.Phase != corev1.PodFailed {
		return fmt.Errorf("phase %s", pd.Status.Phase)
	}
	if len(pd.Status.ContainerStatuses) != 1 || pd.Status.ContainerStatuses[0].State.Terminated == nil {
		return fmt.Errorf("container statuses %+v", pd.Status.ContainerStatuses)
	}
	return nil
}

// events lists the events about the pod.
func (tn *testNode) events(t *testing.T, pd *corev1.Pod) []corev1.Event {
	t.Helper()
	list, err := tn.kube.CoreV1().Events(tn.ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.UID == pd.UID {
			out = append(out, e)
		}
	}
	return out
}

// job is a one-container pod that runs once (restartPolicy Never), as a Job's.
func job(name, image string, command ...string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		Containers:    []corev1.Container{{Name: "c", Image: image, Command: command}}}}
}
