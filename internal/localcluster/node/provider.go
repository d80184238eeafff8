package node

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// The virtual-kubelet side: PodLifecycleHandler and PodNotifier. Pods are keyed by
// UID; a StatefulSet pod comes back under the same name with a new UID, so the name
// index is dropped as soon as a pod is being deleted.

// CreatePod starts the pod's setup and containers in the background.
func (n *Node) CreatePod(_ context.Context, pd *corev1.Pod) error {
	n.mu.Lock()
	if _, ok := n.pods[string(pd.UID)]; ok {
		n.mu.Unlock()
		return nil
	}
	// A pod deleted before it started never starts, as with the kubelet: its
	// object goes, with nothing to stop.
	if pd.DeletionTimestamp != nil || n.gone[string(pd.UID)] {
		delete(n.gone, string(pd.UID))
		n.mu.Unlock()
		go n.deleteObject(pd.Namespace, pd.Name, pd.UID) // #nosec G118 -- outlives the request
		return nil
	}
	// A pod the node still holds under this name is one the API no longer has.
	old := n.pods[n.names[types.NamespacedName{Namespace: pd.Namespace, Name: pd.Name}]]
	p, err := n.newPod(podState{Pod: pd.DeepCopy(), StartTime: metav1.Now(), Containers: map[string]*containerState{}}, true)
	n.mu.Unlock()
	if err != nil {
		return err
	}
	if old != nil {
		n.startRemoval(old)
	}
	n.launch(p)
	return nil
}

// UpdatePod takes a changed spec; a process pod's containers cannot change in place
// (nor can a real pod's, beyond the image), so only the metadata is kept.
func (n *Node) UpdatePod(ctx context.Context, pd *corev1.Pod) error {
	p := n.byName(pd.Namespace, pd.Name)
	if p == nil {
		return errdefs.NotFound("pod not found")
	}
	if p.uid() != string(pd.UID) {
		// Another pod under the same name (a StatefulSet's next one) while the node
		// still holds the old one: the new one starts, the old one goes.
		return n.CreatePod(ctx, pd)
	}
	p.mu.Lock()
	p.st.Pod.Labels, p.st.Pod.Annotations = pd.Labels, pd.Annotations
	p.st.Pod.DeletionTimestamp, p.st.Pod.DeletionGracePeriodSeconds = pd.DeletionTimestamp, pd.DeletionGracePeriodSeconds
	p.mu.Unlock()
	p.save()
	return nil
}

// DeletePod stops the pod's processes in the background (SIGTERM, SIGKILL after the
// grace period), removes its network and files, and then deletes the pod object
// itself, as the kubelet does, so a StatefulSet's next pod need not wait out the grace
// period.
func (n *Node) DeletePod(_ context.Context, pd *corev1.Pod) error {
	n.mu.Lock()
	p, ok := n.pods[string(pd.UID)]
	if !ok {
		// Asked to delete before it was asked to create it: remember, so that it
		// never starts.
		n.gone[string(pd.UID)] = true
	}
	n.mu.Unlock()
	if !ok {
		return errdefs.NotFound("pod not found")
	}
	p.mu.Lock()
	if pd.DeletionGracePeriodSeconds != nil {
		p.st.Pod.DeletionGracePeriodSeconds = pd.DeletionGracePeriodSeconds
	}
	p.mu.Unlock()
	n.startRemoval(p)
	return nil
}

// startRemoval drops the pod from the name index (its name may already belong to
// the next pod) and removes it in the background, once.
func (n *Node) startRemoval(p *pod) {
	n.mu.Lock()
	if n.current(p) {
		delete(n.names, types.NamespacedName{Namespace: p.st.Pod.Namespace, Name: p.st.Pod.Name})
	}
	n.mu.Unlock()
	p.mu.Lock()
	already := p.deleting
	p.deleting = true
	p.mu.Unlock()
	if !already {
		go n.remove(p) // #nosec G118 -- outlives the request: removal finishes on its own
	}
}

func (n *Node) remove(p *pod) {
	p.terminate()
	uid := p.uid()
	if err := tearDownPodNetwork(uid); err != nil {
		n.log.Error(err, "removing pod network", "pod", p.st.Pod.Name)
	}
	_ = n.addrs.release(uid)
	_ = os.RemoveAll(p.dir)
	n.mu.Lock()
	delete(n.pods, uid)
	n.mu.Unlock()
	n.reportTerminal(p)
	n.deleteObject(p.st.Pod.Namespace, p.st.Pod.Name, p.st.Pod.UID)
}

// reportTerminal writes the status of a pod whose containers were stopped for its
// deletion, in a terminal phase, as the kubelet does before the pod object goes:
// a Job's pod carries the Job controller's tracking finalizer, which it removes
// only from a pod that has ended. Left Running, the pod stayed Terminating for
// good and its Job never counted it.
func (n *Node) reportTerminal(p *pod) {
	ours := p.withStatus()
	ours.Status.Phase = p.terminalPhase()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods := n.kube.CoreV1().Pods(ours.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, ours.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != ours.UID || cur.Status.Phase == corev1.PodSucceeded || cur.Status.Phase == corev1.PodFailed {
			return nil
		}
		cur.Status = ours.Status
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !isGone(err) {
		n.log.Error(err, "reporting the end of a deleted pod", "pod", ours.Name)
	}
}

// deleteObject deletes the pod object of a pod that no longer runs here.
func (n *Node) deleteObject(namespace, name string, uid types.UID) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := n.kube.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !isGone(err) {
		n.log.Error(err, "deleting pod object", "pod", name)
	}
}

// GetPod returns the pod as the node runs it. virtual-kubelet asks by name only and
// compares specs, which a StatefulSet's next pod shares with the one before it: when
// the pod under that name in the API is another (a new UID) than the one the node
// still holds, the node does not have it, so virtual-kubelet creates it.
func (n *Node) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	p := n.byName(namespace, name)
	if p == nil {
		return nil, errdefs.NotFound("pod not found")
	}
	if n.lister != nil {
		if live, err := n.lister.Pods(namespace).Get(name); err == nil && live.UID != p.st.Pod.UID {
			return nil, errdefs.NotFound("pod " + name + " is another pod now")
		}
	}
	return p.withStatus(), nil
}

// GetPodStatus returns the pod's current status.
func (n *Node) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pd, err := n.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pd.Status, nil
}

// GetPods lists the pods the node runs.
func (n *Node) GetPods(context.Context) ([]*corev1.Pod, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(n.pods))
	for _, p := range n.pods {
		out = append(out, p.withStatus())
	}
	return out, nil
}

// NotifyPods registers virtual-kubelet's callback for status changes, so status is
// pushed as it changes instead of polled. Re-adopted pods run (and probe) before the
// pod controller starts: a change they saw meanwhile was not pushed, so every pod's
// status is pushed now (and again once the controller is ready, see Run).
func (n *Node) NotifyPods(_ context.Context, cb func(*corev1.Pod)) {
	n.mu.Lock()
	n.notifyCB = cb
	n.mu.Unlock()
	n.notifyAll()
}

func (n *Node) notifyAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.pods {
		p.notifyAsync()
	}
}

// notifyAsync wakes the pod's notifier; changes that come while it is pushing are
// merged into its next push.
func (p *pod) notifyAsync() {
	select {
	case p.pending <- struct{}{}:
	default:
	}
}

// notifier pushes the pod's status to virtual-kubelet, one push at a time, each with
// the status as it is when pushed: virtual-kubelet's callback can wait (until its
// cache knows the pod), and two concurrent pushes could land in either order, an
// older NotReady after a newer Ready. It ends with the pod.
func (p *pod) notifier() {
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.pending:
		}
		n := p.n
		n.mu.Lock()
		cb := n.notifyCB
		// A pod no longer under its name (being deleted, or replaced by a new pod
		// of that name) must not report its status as the new pod's.
		current := n.current(p)
		n.mu.Unlock()
		if cb != nil && current {
			cb(p.withStatus())
		}
	}
}

// current says whether p is the pod of its name, not one being removed whose name
// may be the next pod's; the caller holds n.mu.
func (n *Node) current(p *pod) bool {
	return n.names[types.NamespacedName{Namespace: p.st.Pod.Namespace, Name: p.st.Pod.Name}] == p.uid()
}

func (n *Node) byName(namespace, name string) *pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	uid, ok := n.names[types.NamespacedName{Namespace: namespace, Name: name}]
	if !ok {
		return nil
	}
	return n.pods[uid]
}

// GetContainerLogs serves `kubectl logs`, with --previous, --tail, --limit-bytes and
// -f (follow until the client goes away or the container's process is replaced).
func (n *Node) GetContainerLogs(ctx context.Context, namespace, podName, container string,
	opts api.ContainerLogOpts) (io.ReadCloser, error) {
	p := n.byName(namespace, podName)
	if p == nil {
		return nil, errdefs.NotFound("pod not found")
	}
	if container == "" && len(p.st.Pod.Spec.Containers) == 1 {
		container = p.st.Pod.Spec.Containers[0].Name
	}
	path := p.logPath(container, opts.Previous)
	f, err := os.Open(path) // #nosec G304 -- our own file
	if err != nil {
		return nil, errdefs.NotFound("no log for container " + container)
	}
	if opts.Tail > 0 {
		if err := seekTail(f, opts.Tail); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	var r io.ReadCloser = f
	if opts.Follow {
		r = &follower{ctx: ctx, f: f, exited: p.exitedChan(container)}
	}
	if opts.LimitBytes > 0 {
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(r, int64(opts.LimitBytes)), r}, nil
	}
	return r, nil
}

// seekTail positions f at the start of its last n lines.
func seekTail(f *os.File, n int) error {
	var offsets []int64
	var pos int64
	sc := bufio.NewReader(f)
	for {
		line, err := sc.ReadBytes('\n')
		if len(line) > 0 {
			offsets = append(offsets, pos)
			pos += int64(len(line))
		}
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
	}
	start := int64(0)
	if len(offsets) > n {
		start = offsets[len(offsets)-n]
	}
	_, err := f.Seek(start, io.SeekStart)
	return err
}

// follower reads a growing file until its context ends.
// follower is `kubectl logs -f`: as with the kubelet, the stream ends when the
// container exits (a hook Job's pod that ran to completion ends its follower, which
// then has read all of its output), or when the client goes away.
type follower struct {
	ctx    context.Context
	f      *os.File
	exited <-chan struct{}
	done   bool // the container has exited: what is left in the file is all there is
}

func (fl *follower) Read(b []byte) (int, error) {
	for {
		n, err := fl.f.Read(b)
		if n > 0 || !errors.Is(err, io.EOF) {
			return n, err
		}
		if fl.done {
			return 0, io.EOF
		}
		select {
		case <-fl.ctx.Done():
			return 0, io.EOF
		case <-fl.exited:
			fl.done = true
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (fl *follower) Close() error { return fl.f.Close() }

// newPod registers a pod by UID and, when named (it is the pod of its name in the
// API), by name.
func (n *Node) newPod(st podState, named bool) (*pod, error) {
	dir := filepath.Join(n.cfg.Dir, "pods", string(st.Pod.UID))
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(n.ctx)
	p := &pod{n: n, dir: dir, st: st, exited: map[string]chan struct{}{}, spec: map[string]*ShimSpec{},
		stopped: make(chan struct{}), pending: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
	go p.notifier()
	n.pods[string(st.Pod.UID)] = p
	if named {
		n.names[types.NamespacedName{Namespace: st.Pod.Namespace, Name: st.Pod.Name}] = string(st.Pod.UID)
	}
	p.save()
	return p, nil
}

func (n *Node) launch(p *pod) {
	go p.run()
	p.notifyAsync()
}
