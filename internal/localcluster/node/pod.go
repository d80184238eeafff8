package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// podState is what the node keeps of a pod on disk (pods/<uid>/state.json), so a
// restarted node re-adopts the pod's processes instead of starting them again.
type podState struct {
	Pod        *corev1.Pod                `json:"pod"`
	IP         string                     `json:"ip,omitempty"`
	StartTime  metav1.Time                `json:"startTime"`
	Containers map[string]*containerState `json:"containers"`
	// Initialized is set once every init container has succeeded.
	Initialized bool `json:"initialized,omitempty"`
	// ReadySince is when the pod last became Ready (or not Ready).
	ReadyChanged metav1.Time `json:"readyChanged"`
	Ready        bool        `json:"ready,omitempty"`
	// Failed says why the pod cannot run (a volume, an unknown image), if it cannot.
	Waiting string `json:"waiting,omitempty"`
}

type containerState struct {
	// Pid is the shim's pid; StartTicks its start time (/proc/<pid>/stat), so a reused
	// pid is not mistaken for it.
	Pid          int         `json:"pid,omitempty"`
	StartTicks   string      `json:"startTicks,omitempty"`
	StartedAt    metav1.Time `json:"startedAt"`
	RestartCount int32       `json:"restartCount"`
	Running      bool        `json:"running,omitempty"`
	Started      bool        `json:"started,omitempty"`
	Ready        bool        `json:"ready,omitempty"`
	// Terminated is the last exit, if the container has exited.
	Terminated *corev1.ContainerStateTerminated `json:"terminated,omitempty"`
	Previous   *corev1.ContainerStateTerminated `json:"previous,omitempty"`
	// Waiting is the reason it does not run (ContainerCreating, CrashLoopBackOff),
	// WaitingMessage the details, if any.
	Waiting        string `json:"waiting,omitempty"`
	WaitingMessage string `json:"waitingMessage,omitempty"`
}

// pod is one pod on the node: its state and the goroutines that run its containers.
type pod struct {
	n   *Node
	dir string

	mu     sync.Mutex
	saveMu sync.Mutex
	st     podState
	exited map[string]chan struct{} // closed when the container's current process exits
	spec   map[string]*ShimSpec
	// refused holds, by container, why the kubelet would not create it
	// (CreateContainerConfigError): its securityContext cannot be honoured.
	refused map[string]string
	// pullFailed holds, by container, why its image cannot be "pulled" (it has no
	// entry in the image map); the container waits in ImagePullBackOff.
	pullFailed map[string]string
	// setUpPod and vols are the pod and its volumes as set up, to build the spec
	// of a container whose image is pulled later.
	setUpPod *corev1.Pod
	vols     map[string]string
	stopped  chan struct{} // closed when every container supervisor has returned
	pending  chan struct{} // a status push asked for (see notifier)

	ctx      context.Context
	cancel   context.CancelFunc
	deleting bool
	wg       sync.WaitGroup
}

func (p *pod) uid() string { return string(p.st.Pod.UID) }

func (p *pod) save() {
	// One writer at a time: two interleaved writes would leave a file that neither a
	// restarted node nor `down` could read, and their processes would be lost.
	p.saveMu.Lock()
	defer p.saveMu.Unlock()
	p.mu.Lock()
	data, err := json.Marshal(&p.st)
	p.mu.Unlock()
	if err == nil {
		tmp := filepath.Join(p.dir, "state.json.tmp")
		if err = os.WriteFile(tmp, data, 0o600); err == nil {
			err = os.Rename(tmp, filepath.Join(p.dir, "state.json"))
		}
	}
	if err != nil {
		p.n.log.Error(err, "saving pod state", "pod", p.st.Pod.Name)
	}
}

// changed saves the state and tells virtual-kubelet the pod's status changed.
func (p *pod) changed() {
	p.save()
	p.notifyAsync()
}

// run sets the pod up and starts its containers; it returns when every container
// has stopped for good (or the pod is deleted).
func (p *pod) run() {
	defer close(p.stopped)
	if err := p.setUp(); err != nil {
		return
	}
	// The volumes follow their objects while containers run; the sync ends before
	// stopped is closed, so that the pod's removal never races a write into its
	// directory.
	syncCtx, stopSync := context.WithCancel(p.ctx)
	synced := make(chan struct{})
	go func() { defer close(synced); p.syncVolumes(syncCtx) }()
	defer func() { stopSync(); <-synced }()
	if !p.runInitContainers() {
		return
	}
	for i := range p.st.Pod.Spec.Containers {
		c := &p.st.Pod.Spec.Containers[i]
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.supervise(c, false) }()
	}
	p.wg.Wait()
}

// setUp gives the pod its address, network namespace and volumes, retrying what can
// succeed later (a claim not bound yet, a Secret not created yet).
func (p *pod) setUp() error {
	backoff := time.Second
	for {
		err := p.trySetUp()
		if err == nil {
			return nil
		}
		p.mu.Lock()
		p.st.Waiting = err.Error()
		p.mu.Unlock()
		p.changed()
		p.n.log.Info("pod not set up yet", "pod", p.st.Pod.Namespace+"/"+p.st.Pod.Name, "reason", err.Error())
		select {
		case <-p.ctx.Done():
			return p.ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (p *pod) trySetUp() error {
	pd := p.st.Pod
	ip, err := p.n.addrs.allocate(p.uid())
	if err != nil {
		return err
	}
	if err := setUpPodNetwork(p.uid(), ip, p.n.prefixLen(), p.n.cfg.Bridge, p.n.cfg.HostIP); err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	if err := p.writeNetworkFiles(ip); err != nil {
		return err
	}
	p.mu.Lock()
	p.st.IP = ip
	podCopy := pd.DeepCopy() // UpdatePod changes its metadata under the lock
	p.mu.Unlock()
	podCopy.Status.PodIP = ip
	vols, err := p.n.res.volumes(p.ctx, podCopy, filepath.Join(p.dir, "volumes"))
	if err != nil {
		return err
	}
	// The specs are built unlocked: env reads Secrets and ConfigMaps from the API
	// server, and status must not wait for it.
	specs, refused, pullFailed := map[string]*ShimSpec{}, map[string]string{}, map[string]string{}
	for _, list := range [][]corev1.Container{pd.Spec.InitContainers, pd.Spec.Containers} {
		for i := range list {
			spec, err := p.shimSpec(podCopy, &list[i], vols)
			var cfg *configError
			if errors.As(err, &cfg) {
				refused[list[i].Name] = cfg.msg
				continue
			}
			if pull, ok := isImageNotPulled(err); ok {
				pullFailed[list[i].Name] = pull.Error()
				continue
			}
			if err != nil {
				return fmt.Errorf("container %s: %w", list[i].Name, err)
			}
			specs[list[i].Name] = spec
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spec, p.refused, p.pullFailed = specs, refused, pullFailed
	p.setUpPod, p.vols = podCopy, vols
	p.st.Waiting = ""
	return nil
}

// volumeSyncPeriod is how often a running pod's Secret, ConfigMap and projected
// volumes are brought up to date with their objects. A kubelet does it in its
// periodic sync of the pod (a minute, plus its cache's time to live); the local
// cluster does it sooner, so that a test or a demo does not wait a minute.
var volumeSyncPeriod = 5 * time.Second

// syncVolumes keeps the pod's Secret, ConfigMap and projected volumes current while
// it runs, as a kubelet does: a changed Secret reaches the files of the running
// containers without a restart (a subPath mount would not see it, here as there).
// The new set of files is swapped in whole (writeFiles); an unchanged one is left as
// it is. An object that cannot be read leaves the files as they were, as a kubelet
// leaves them; an optional one that was deleted empties the volume, as there.
// Projected volumes with a service-account token are left alone: the token outlives
// the pods that run here, and renewing it every period would load the API server.
func (p *pod) syncVolumes(ctx context.Context) {
	t := time.NewTicker(volumeSyncPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		pd, vols := p.setUpPod, p.vols
		p.mu.Unlock()
		if pd == nil {
			continue
		}
		var fsGroup *int64
		if sc := pd.Spec.SecurityContext; sc != nil {
			fsGroup = sc.FSGroup
		}
		for _, v := range pd.Spec.Volumes {
			if !syncable(v) || vols[v.Name] == "" {
				continue
			}
			files, err := p.n.res.volumeFiles(ctx, pd, v)
			if err == nil {
				err = writeFiles(vols[v.Name], files, fsGroup)
			}
			if err != nil && ctx.Err() == nil {
				p.n.log.Info("volume not brought up to date", "pod", pd.Namespace+"/"+pd.Name, "volume", v.Name, "reason", err.Error())
			}
		}
	}
}

// syncable says whether syncVolumes keeps v up to date.
func syncable(v corev1.Volume) bool {
	switch {
	case v.Secret != nil, v.ConfigMap != nil:
		return true
	case v.Projected != nil:
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken != nil {
				return false
			}
		}
		return true
	}
	return false
}

// writeNetworkFiles writes the pod's resolv.conf and hosts, which `ip netns exec`
// binds over /etc/resolv.conf and /etc/hosts for every process of the pod.
func (p *pod) writeNetworkFiles(ip string) error {
	dir := filepath.Join("/etc/netns", netnsName(p.uid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ns := p.st.Pod.Namespace
	resolv := fmt.Sprintf("nameserver %s\nsearch %s.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
		p.n.cfg.HostIP, ns)
	hosts := fmt.Sprintf("127.0.0.1 localhost\n::1 localhost\n%s %s\n", ip, p.st.Pod.Name)
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(resolv), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644)
}

// podHostname is the host name a kubelet gives a pod's containers: spec.hostname,
// else the pod's name, cut to a DNS label's 63 characters without a trailing - or ..
func podHostname(pd *corev1.Pod) string {
	if pd.Spec.Hostname != "" {
		return pd.Spec.Hostname
	}
	if len(pd.Name) > 63 {
		return strings.TrimRight(pd.Name[:63], "-.")
	}
	return pd.Name
}

func (p *pod) shimSpec(pd *corev1.Pod, c *corev1.Container, vols map[string]string) (*ShimSpec, error) {
	images, err := p.n.imageMap()
	if err != nil {
		return nil, err
	}
	argv, imageEnv, imageUser, err := images.resolve(c)
	if err != nil {
		return nil, err
	}
	sec, err := security(pd, c, imageUser)
	if err != nil {
		return nil, err
	}
	term, err := p.terminationFile(c, sec)
	if err != nil {
		return nil, err
	}
	env, err := p.n.res.env(p.ctx, pd, c, imageEnv, p.n.cfg.HostIP, strconv.Itoa(p.n.cfg.APIServerPort))
	if err != nil {
		return nil, err
	}
	spec := &ShimSpec{Argv: argv, Env: env, Dir: c.WorkingDir, Security: sec, Hostname: podHostname(pd),
		ExitFile: filepath.Join(p.dir, "exit-"+c.Name), Scratch: filepath.Join(p.dir, "scratch", c.Name)}
	for _, m := range c.VolumeMounts {
		src, ok := vols[m.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: no such volume", m.Name)
		}
		if m.SubPath != "" {
			src = filepath.Join(src, filepath.Clean("/"+m.SubPath))
		}
		spec.Mounts = append(spec.Mounts, Mount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly})
	}
	if term != "" {
		// At the path the spec names, as in a real container: the shim lays a tmpfs
		// over /dev that shows the host's entries and this one file.
		spec.Mounts = append(spec.Mounts, Mount{Source: term, Target: c.TerminationMessagePath})
	}
	return spec, nil
}

// runInitContainers runs the init containers one after another to completion.
func (p *pod) runInitContainers() bool {
	if p.st.Initialized {
		return true
	}
	for i := range p.st.Pod.Spec.InitContainers {
		c := &p.st.Pod.Spec.InitContainers[i]
		if !p.supervise(c, true) {
			return false
		}
	}
	p.mu.Lock()
	p.st.Initialized = true
	p.mu.Unlock()
	p.changed()
	return true
}

// supervise runs one container for as long as its restart policy says; an init
// container runs until it succeeds. It reports whether the container succeeded.
func (p *pod) supervise(c *corev1.Container, initContainer bool) bool {
	backoff := time.Second
	// A re-adopted pod's container may have exited for good before the node went
	// down (a Job's pod, a finished init container): it is not run again.
	if code, done := p.finished(c.Name); done {
		if !p.restarts(code, initContainer) {
			return code == 0
		}
		// It was waiting out its back-off when the node went down: this start is
		// a restart, and counts as one.
		p.mu.Lock()
		p.st.Containers[c.Name].RestartCount++
		p.mu.Unlock()
	}
	if !p.awaitImage(c) {
		return false
	}
	if msg := p.refusal(c.Name); msg != "" {
		// The kubelet retries such a container for ever; nothing here can change
		// its verdict but a new pod.
		p.setWaitingMessage(c.Name, "CreateContainerConfigError", msg)
		// The kubelet's event for it: reason Failed, "Error: " and the message.
		p.event(corev1.EventTypeWarning, "Failed", "Error: %s", msg)
		<-p.ctx.Done()
		return false
	}
	for {
		code, err := p.runOnce(c)
		if p.ctx.Err() != nil || p.isDeleting() {
			return false // deleted, or the node is shutting down
		}
		if err != nil {
			p.n.log.Error(err, "container did not start", "pod", p.st.Pod.Name, "container", c.Name)
		}
		if !p.restarts(code, initContainer) {
			return code == 0
		}
		// The kubelet's back-off starts at 10 s and doubles to 5 min; on a test
		// machine 1 s to 30 s keeps crash loops visible without slowing tests.
		p.setWaiting(c.Name, "CrashLoopBackOff")
		select {
		case <-p.ctx.Done():
			return false
		case <-time.After(backoff):
		}
		if p.isDeleting() {
			return false
		}
		backoff = min(backoff*2, 30*time.Second)
		p.mu.Lock()
		p.st.Containers[c.Name].RestartCount++
		p.mu.Unlock()
	}
}

// restarts says whether a container that exited with code runs again: as the pod's
// restartPolicy says, and an init container until it succeeds (unless Never).
func (p *pod) restarts(code int, initContainer bool) bool {
	policy := p.st.Pod.Spec.RestartPolicy
	if initContainer {
		return code != 0 && policy != corev1.RestartPolicyNever
	}
	return policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && code != 0)
}

// finished reports the exit code of a container that has exited and is not running.
func (p *pod) finished(name string) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return exitOf(p.st.Containers[name])
}

// exitOf reports the exit code of a container state that has exited and is not
// running.
func exitOf(cs *containerState) (int, bool) {
	if cs == nil || cs.Running || cs.Terminated == nil {
		return 0, false
	}
	return int(cs.Terminated.ExitCode), true
}

func (p *pod) setWaiting(name, reason string) { p.setWaitingMessage(name, reason, "") }

func (p *pod) setWaitingMessage(name, reason, message string) {
	p.mu.Lock()
	cs := p.container(name)
	cs.Waiting, cs.WaitingMessage, cs.Running, cs.Ready, cs.Started = reason, message, false, false, false
	p.mu.Unlock()
	p.changed()
}

func (p *pod) refusal(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused[name]
}

func (p *pod) isDeleting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deleting
}

func (p *pod) container(name string) *containerState {
	cs, ok := p.st.Containers[name]
	if !ok {
		cs = &containerState{}
		p.st.Containers[name] = cs
	}
	return cs
}

// runOnce starts the container (or adopts its running process) and waits for it to
// exit, running its probes meanwhile; it returns the exit code.
func (p *pod) runOnce(c *corev1.Container) (int, error) {
	p.mu.Lock()
	cs := p.container(c.Name)
	adopted := cs.Running && processAlive(cs.Pid, cs.StartTicks)
	// Running by the state file, but gone: it exited while the node was down, and
	// what it left in its exit file is its exit.
	exitedAway := cs.Running && !adopted
	var exited chan struct{}
	if adopted {
		// Nobody probed it while the node was down: Ready again when a probe says so.
		cs.Ready, cs.Started = false, c.StartupProbe == nil
		exited = make(chan struct{})
		p.exited[c.Name] = exited
	}
	p.mu.Unlock()
	var wait func() error
	switch {
	case exitedAway:
		code, at := p.exitCode(c.Name)
		return p.recordExit(c, cs, code, at, ""), nil
	case adopted:
		wait = func() error { return waitForeign(p.ctx, cs.Pid, cs.StartTicks) }
	default:
		var err error
		if wait, exited, err = p.start(c); err != nil {
			if !errors.Is(err, errDeleting) {
				p.recordExit(c, cs, 128, metav1.Now(), "StartError: "+err.Error())
			}
			return 128, err
		}
	}
	probeCtx, stopProbes := context.WithCancel(p.ctx)
	go p.probe(probeCtx, c)
	err := wait()
	close(exited)
	stopProbes()
	if p.ctx.Err() != nil && !p.isDeleting() {
		// The node is shutting down; the process may well run on, to be adopted.
		return 0, p.ctx.Err()
	}
	code, at := p.exitCode(c.Name)
	p.recordExit(c, cs, code, at, "")
	if err != nil && p.ctx.Err() == nil {
		p.n.log.Info("waiting for container", "pod", p.st.Pod.Name, "container", c.Name, "error", err.Error())
	}
	return code, nil
}

// recordExit records that the container's process ended with code and returns
// code. startErr says why, when it never started; otherwise the message is the
// container's termination message, as the kubelet reports it.
func (p *pod) recordExit(c *corev1.Container, cs *containerState, code int, at metav1.Time, startErr string) int {
	message := startErr
	if startErr == "" {
		message = p.terminationMessage(c, code)
	}
	p.mu.Lock()
	term := &corev1.ContainerStateTerminated{ExitCode: int32(code), StartedAt: cs.StartedAt, // #nosec G115 -- exit codes are small
		FinishedAt: at, Reason: "Completed", Message: message}
	if cs.Pid != 0 {
		term.ContainerID = containerID(cs.Pid)
	}
	switch {
	case startErr != "":
		term.Reason = "StartError"
	case code != 0:
		term.Reason = "Error"
	}
	cs.Previous, cs.Terminated = cs.Terminated, term
	cs.Running, cs.Ready, cs.Started, cs.Pid, cs.Waiting = false, false, false, 0, ""
	p.mu.Unlock()
	p.changed()
	return code
}

// errDeleting is start's refusal to start a container of a pod being deleted.
var errDeleting = errors.New("pod is being deleted")

// start launches the container's shim in the pod's namespaces, in a session of its
// own, with its output appended to the container's log. It returns the wait for the
// process and the channel to close when it has exited.
func (p *pod) start(c *corev1.Container) (func() error, chan struct{}, error) {
	p.mu.Lock()
	spec := p.spec[c.Name]
	p.mu.Unlock()
	if spec == nil {
		return nil, nil, errors.New("no spec")
	}
	specPath := p.specPath(c.Name)
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(specPath, data, 0o600); err != nil {
		return nil, nil, err
	}
	_ = os.Remove(spec.ExitFile)
	// A new container gets an empty termination-message file, as each of the
	// kubelet's gets a file of its own.
	if err := truncateIfExists(p.terminationPath(c.Name)); err != nil {
		return nil, nil, err
	}
	logPath := p.logPath(c.Name, false)
	if _, err := os.Stat(logPath); err == nil {
		_ = os.Rename(logPath, p.logPath(c.Name, true))
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) // #nosec G304 -- our own file
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = logFile.Close() }()
	cmd := exec.Command("ip", "netns", "exec", netnsName(p.uid()), p.n.cfg.Self, "shim", specPath) // #nosec G204 -- this tool
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The start and its record are one critical section with terminate's check of
	// deleting: either the pod is being deleted and nothing starts, or kill sees
	// the new pid and its exit channel.
	p.mu.Lock()
	if p.deleting || p.ctx.Err() != nil {
		p.mu.Unlock()
		return nil, nil, errDeleting
	}
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		return nil, nil, err
	}
	exited := make(chan struct{})
	p.exited[c.Name] = exited
	cs := p.container(c.Name)
	cs.Pid, cs.StartTicks, cs.StartedAt = cmd.Process.Pid, startTicks(cmd.Process.Pid), metav1.Now()
	cs.Running, cs.Waiting, cs.Started = true, "", c.StartupProbe == nil
	p.mu.Unlock()
	p.changed()
	return cmd.Wait, exited, nil
}

// adoptUnrecorded takes the shims of a re-adopted pod that a node which died
// between starting them and saving their pids left running unrecorded, so they are
// adopted rather than started a second time.
func (p *pod) adoptUnrecorded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, list := range [][]corev1.Container{p.st.Pod.Spec.InitContainers, p.st.Pod.Spec.Containers} {
		for _, c := range list {
			cs := p.container(c.Name)
			if cs.Running {
				continue
			}
			specPath := p.specPath(c.Name)
			if pids := shims(func(spec string) bool { return spec == specPath }); len(pids) > 0 {
				cs.Pid, cs.StartTicks, cs.StartedAt, cs.Running = pids[0], startTicks(pids[0]), metav1.Now(), true
			}
		}
	}
}

func (p *pod) specPath(container string) string {
	return filepath.Join(p.dir, "spec-"+container+".json")
}

// exitedChan is closed when the container's current process exits; closed
// already when the container does not run (it exited, or waits to restart).
func (p *pod) exitedChan(container string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cs, ok := p.st.Containers[container]; ok && cs.Running {
		if ch := p.exited[container]; ch != nil {
			return ch
		}
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

func (p *pod) logPath(container string, previous bool) string {
	name := container + ".log"
	if previous {
		name = container + ".previous.log"
	}
	return filepath.Join(p.dir, "logs", name)
}

// exitCode reads the code the shim recorded and when (the file's time); a shim
// killed before it could record one (SIGKILL) counts as 137, ended now.
func (p *pod) exitCode(container string) (int, metav1.Time) {
	path := filepath.Join(p.dir, "exit-"+container)
	data, err := os.ReadFile(path) // #nosec G304 -- our own file
	if err != nil {
		return 137, metav1.Now()
	}
	at := metav1.Now()
	if st, err := os.Stat(path); err == nil {
		at = metav1.NewTime(st.ModTime())
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 137, at
	}
	return code, at
}

// kill stops one container's process: SIGTERM to its session, SIGKILL after grace.
// A process the node never waited for (a pod of an earlier run being removed) is
// watched through /proc.
func (p *pod) kill(name string, grace time.Duration) {
	p.mu.Lock()
	cs := p.container(name)
	pid, ticks, exited := cs.Pid, cs.StartTicks, p.exited[name]
	p.mu.Unlock()
	if pid == 0 || !processAlive(pid, ticks) {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.After(grace)
	for processAlive(pid, ticks) {
		select {
		case <-exited:
			return
		case <-deadline:
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// terminate stops every container (grace from the deletion, else the pod's
// terminationGracePeriodSeconds) and waits for the supervisors to return.
func (p *pod) terminate() {
	p.mu.Lock()
	p.deleting = true
	pd := p.st.Pod
	grace := time.Duration(ptr.Deref(pd.DeletionGracePeriodSeconds, ptr.Deref(pd.Spec.TerminationGracePeriodSeconds, 30))) * time.Second
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, list := range [][]corev1.Container{pd.Spec.InitContainers, pd.Spec.Containers} {
		for _, c := range list {
			wg.Add(1)
			go func() { defer wg.Done(); p.kill(c.Name, grace) }()
		}
	}
	wg.Wait()
	p.cancel()
	<-p.stopped
}

func containerID(pid int) string { return "process://" + strconv.Itoa(pid) }

// startTicks is the process's start time in clock ticks since boot.
func startTicks(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 || fields[0] == "Z" {
		return ""
	}
	return fields[19]
}

func processAlive(pid int, ticks string) bool {
	return pid > 0 && ticks != "" && startTicks(pid) == ticks
}

// waitForeign waits for a process that is not our child (adopted after a restart).
func waitForeign(ctx context.Context, pid int, ticks string) error {
	for processAlive(pid, ticks) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil
}
