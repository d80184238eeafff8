// Package node is the local cluster's node: a github.com/virtual-kubelet/virtual-kubelet
// provider whose pods are local processes. virtual-kubelet registers the node, keeps
// its lease and writes pod status; this package runs the pods — a network namespace
// per pod on the host's bridge, volumes bound at their mount paths in a mount
// namespace per container (the shim), probes, restart policy, logs — and re-adopts
// their processes when it restarts. It also runs the cluster's add-ons that a node
// agent or a DaemonSet would: DNS and a volume provisioner.
package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/sirupsen/logrus"
	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	vklogrus "github.com/virtual-kubelet/virtual-kubelet/log/logrus"
	vknode "github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/kubeoauth/kubeoauth/internal/localcluster/netsvc"
)

// Config is what the node needs to know of its cluster.
type Config struct {
	// Dir is the node's own state directory (pods, volumes, addresses).
	Dir      string
	NodeName string
	// HostIP is the host's address on the pod network (the bridge's), the node's
	// InternalIP; PodCIDR the pod network.
	HostIP, PodCIDR, Bridge string
	APIServerPort           int
	KubeletPort             int
	DNSPort                 int
	// Kubeconfig is the node's own (system:node:<name>); AddonsKubeconfig the add-ons'.
	Kubeconfig, AddonsKubeconfig string
	// ServingCert/Key serve the node's HTTPS API (logs); ClientCA verifies the API
	// server's client certificate.
	ServingCert, ServingKey, ClientCA string
	// Images is the image map file (and ExtraImagesDir beside it); Self the
	// executable that runs `shim`.
	Images, Self string
	Log          logr.Logger
}

// Node is the running node.
type Node struct {
	cfg    Config
	log    logr.Logger
	ctx    context.Context
	kube   kubernetes.Interface
	addons kubernetes.Interface
	images *ImageMap
	res    *resolver
	addrs  *addresses

	mu    sync.Mutex
	pods  map[string]*pod                 // by UID
	names map[types.NamespacedName]string // namespace/name → UID
	// gone holds the UIDs of pods deleted before the node was asked to create
	// them (virtual-kubelet can ask in that order): they must never start.
	gone     map[string]bool
	notifyCB func(*corev1.Pod)
	// lister is the pod controller's view of this node's pods in the API.
	lister corelisters.PodLister
	// events records what the kubelet reports as events (nil in unit tests).
	events record.EventRecorder
}

// Provisioner is the StorageClass provisioner name of the node's volumes.
const Provisioner = "kubeoauth.io/local-directory"

func (n *Node) prefixLen() string {
	_, ipnet, _ := net.ParseCIDR(n.cfg.PodCIDR)
	ones, _ := ipnet.Mask.Size()
	return strconv.Itoa(ones)
}

// Run runs the node until ctx ends. The pods' processes keep running after it
// returns; the next Run re-adopts them.
func Run(ctx context.Context, cfg Config) error {
	n, err := newNode(ctx, cfg)
	if err != nil {
		return err
	}
	// virtual-kubelet logs through its own interface (to nowhere by default): its
	// warnings — a status update the API server refused — are worth seeing.
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	vklog.L = vklogrus.FromLogrus(logrus.NewEntry(logger))
	if err := n.readopt(ctx); err != nil {
		return fmt.Errorf("re-adopting pods: %w", err)
	}
	pc, err := n.podController(ctx)
	if err != nil {
		return err
	}
	nc, err := vknode.NewNodeController(vknode.NaiveNodeProvider{}, n.nodeObject(), n.kube.CoreV1().Nodes(),
		vknode.WithNodeEnableLeaseV1WithRenewInterval(n.kube.CoordinationV1().Leases(corev1.NamespaceNodeLease), 40, 4*time.Second))
	if err != nil {
		return err
	}
	errs := make(chan error, 4)
	go func() { errs <- nc.Run(ctx) }()
	go func() { errs <- pc.Run(ctx, 4) }()
	go func() { errs <- n.serveAPI(ctx) }()
	go func() {
		errs <- netsvc.ServeDNS(ctx, net.JoinHostPort(cfg.HostIP, strconv.Itoa(cfg.DNSPort)), n.addons, n.log)
	}()
	go n.provision(ctx)
	go func() {
		// A push made before the pod controller knew the pod may have been dropped.
		select {
		case <-pc.Ready():
			n.notifyAll()
		case <-ctx.Done():
		}
	}()
	select {
	case err = <-errs:
	case <-ctx.Done():
	}
	n.shutdown()
	return err
}

// podController is virtual-kubelet's pod controller for this node's pods, its
// informers started and its events recorded as the kubelet's.
func (n *Node) podController(ctx context.Context) (*vknode.PodController, error) {
	factory := informers.NewSharedInformerFactoryWithOptions(n.kube, time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", n.cfg.NodeName).String()
		}))
	// The Secret, ConfigMap and Service informers are required by virtual-kubelet's
	// pod controller but never started: the node resolves them with GETs (resolve.go).
	unused := informers.NewSharedInformerFactory(n.kube, 0)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: n.kube.CoreV1().Events("")})
	n.events = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: n.cfg.NodeName})
	pc, err := vknode.NewPodController(vknode.PodControllerConfig{
		PodClient: n.kube.CoreV1(), PodInformer: factory.Core().V1().Pods(), Provider: n,
		EventRecorder:     n.events,
		ConfigMapInformer: unused.Core().V1().ConfigMaps(), SecretInformer: unused.Core().V1().Secrets(),
		ServiceInformer: unused.Core().V1().Services(), SkipDownwardAPIResolution: true,
	})
	if err != nil {
		return nil, err
	}
	n.lister = factory.Core().V1().Pods().Lister() // before the pod controller runs, which calls GetPod
	factory.Start(ctx.Done())
	return pc, nil
}

func newNode(ctx context.Context, cfg Config) (*Node, error) {
	kube, err := client(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	addons, err := client(cfg.AddonsKubeconfig)
	if err != nil {
		return nil, err
	}
	images, err := LoadImageMap(cfg.Images)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "pods"), 0o700); err != nil {
		return nil, err
	}
	addrs, err := loadAddresses(cfg.Dir, cfg.PodCIDR, cfg.HostIP)
	if err != nil {
		return nil, err
	}
	return &Node{cfg: cfg, log: cfg.Log, ctx: ctx, kube: kube, addons: addons, images: images,
		res: &resolver{c: kube, hostIP: cfg.HostIP}, addrs: addrs,
		pods: map[string]*pod{}, names: map[types.NamespacedName]string{}, gone: map[string]bool{}}, nil
}

// imageMap is the image map as it is now: read again for every pod, so images
// loaded into the running node (ExtraImagesDir) are found, as a runtime finds an
// image pulled since the last pod.
func (n *Node) imageMap() (*ImageMap, error) {
	if n.cfg.Images == "" {
		return n.images, nil
	}
	m, err := LoadImageMap(n.cfg.Images)
	if err != nil {
		return nil, fmt.Errorf("the node's image map: %w", err)
	}
	return m, nil
}

func client(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	return kubernetes.NewForConfig(cfg)
}

// nodeObject is the Node as registered: addresses, capacity, the kubelet endpoint
// (for logs) and conditions, which virtual-kubelet would otherwise leave empty.
func (n *Node) nodeObject() *corev1.Node {
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: resource.MustParse("16Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.cfg.NodeName, Labels: map[string]string{
			"kubernetes.io/hostname": n.cfg.NodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": runtime.GOARCH,
			"type": "process-node"}},
		Spec: corev1.NodeSpec{PodCIDR: n.cfg.PodCIDR, PodCIDRs: []string{n.cfg.PodCIDR}},
		Status: corev1.NodeStatus{
			Capacity: capacity, Allocatable: capacity,
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.cfg.HostIP},
				{Type: corev1.NodeHostName, Address: n.cfg.NodeName}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{
				KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(n.cfg.KubeletPort)}}, // #nosec G115 -- a port
			NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: runtime.GOARCH,
				ContainerRuntimeVersion: "process://kubeoauth-local"},
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"),
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"),
				cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated"),
			},
		},
	}
}

// serveAPI serves the node's HTTPS API (container logs) to clients with a
// certificate of the cluster's CA — the API server's kubelet client certificate.
func (n *Node) serveAPI(ctx context.Context) error {
	caPEM, err := os.ReadFile(n.cfg.ClientCA)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	pair, err := tls.LoadX509KeyPair(n.cfg.ServingCert, n.cfg.ServingKey)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", api.PodHandler(api.PodHandlerConfig{GetContainerLogs: n.GetContainerLogs, GetPods: n.GetPods}, false))
	srv := &http.Server{Addr: net.JoinHostPort(n.cfg.HostIP, strconv.Itoa(n.cfg.KubeletPort)), Handler: mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServeTLS("", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// readopt takes back the pods of an earlier run of the node whose objects still
// exist: their processes run on and are watched again; what exited meanwhile is
// restarted as its policy says.
func (n *Node) readopt(ctx context.Context) error {
	entries, err := os.ReadDir(filepath.Join(n.cfg.Dir, "pods"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(n.cfg.Dir, "pods", e.Name(), "state.json")) // #nosec G304 -- our own state
		if err != nil {
			continue
		}
		var st podState
		if err := json.Unmarshal(data, &st); err != nil || st.Pod == nil {
			continue
		}
		live, err := n.kube.CoreV1().Pods(st.Pod.Namespace).Get(ctx, st.Pod.Name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		stale := err != nil || live.UID != st.Pod.UID || live.DeletionTimestamp != nil
		n.mu.Lock()
		p, perr := n.newPod(st, !stale)
		n.mu.Unlock()
		if perr != nil {
			return perr
		}
		if stale {
			// Gone while the node was down: stop what is left of it. Nothing runs
			// its containers, so there are no supervisors to wait for.
			close(p.stopped)
			n.startRemoval(p)
			continue
		}
		n.log.Info("re-adopting pod", "pod", st.Pod.Namespace+"/"+st.Pod.Name)
		p.adoptUnrecorded()
		n.launch(p)
	}
	return nil
}

// shutdown marks the node's pods not Ready, since nothing probes them while the node
// is down; their processes keep running, to be re-adopted.
func (n *Node) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.mu.Lock()
	pods := make([]*pod, 0, len(n.pods))
	for _, p := range n.pods {
		if n.current(p) {
			pods = append(pods, p)
		}
	}
	n.mu.Unlock()
	for _, p := range pods {
		pd := p.withStatus()
		now := metav1.Now()
		var st corev1.PodStatus
		for _, t := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
			st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionFalse,
				Reason: "NodeShutdown", LastTransitionTime: now})
		}
		st.ContainerStatuses = pd.Status.ContainerStatuses
		for i := range st.ContainerStatuses {
			st.ContainerStatuses[i].Ready = false
		}
		// The UID makes the patch fail rather than touch another pod of that name.
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pd.UID}, "status": st})
		if err == nil {
			_, err = n.kube.CoreV1().Pods(pd.Namespace).Patch(ctx, pd.Name, types.StrategicMergePatchType, patch,
				metav1.PatchOptions{}, "status")
		}
		if err != nil && !isGone(err) {
			n.log.Error(err, "marking pod not ready", "pod", pd.Name)
		}
	}
	n.log.Info("node stopped; its pods' processes run on, marked not ready", "pods", len(pods))
}

func isGone(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.IsConflict(err)
}

// StopAll stops the processes of every pod recorded in dir (SIGTERM to each
// container's session, SIGKILL after 10 s); `down` calls it. Besides the recorded
// pids it looks for any process still running this node's shim on one of dir's
// files, so a lost state file cannot leave a process behind.
func StopAll(dir string, progress io.Writer) error {
	pids := recordedPids(dir)
	pids = append(pids, shimsOf(dir)...)
	slices.Sort(pids)
	pids = slices.Compact(pids)
	if len(pids) == 0 {
		return nil
	}
	_, _ = fmt.Fprintf(progress, ">> stopping %d pod processes\n", len(pids))
	for _, pid := range pids {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for startTicks(pid) != "" && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	return nil
}

func recordedPids(dir string) []int {
	entries, _ := os.ReadDir(filepath.Join(dir, "pods"))
	var pids []int
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, "pods", e.Name(), "state.json")) // #nosec G304 -- our own state
		if err != nil {
			continue
		}
		var st podState
		if json.Unmarshal(data, &st) != nil {
			continue
		}
		for _, cs := range st.Containers {
			if processAlive(cs.Pid, cs.StartTicks) {
				pids = append(pids, cs.Pid)
			}
		}
	}
	return pids
}

// shimsOf finds running shims whose spec file lies under dir.
func shimsOf(dir string) []int {
	return shims(func(spec string) bool { return strings.HasPrefix(spec, filepath.Join(dir, "pods")+"/") })
}

// shims finds running shims whose spec file matches.
func shims(match func(specPath string) bool) []int {
	procs, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")) // #nosec G304 -- /proc
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) >= 3 && args[1] == "shim" && match(args[2]) {
			pids = append(pids, pid)
		}
	}
	return pids
}
