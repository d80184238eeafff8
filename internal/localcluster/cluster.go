// Package localcluster runs a small but real Kubernetes cluster on one machine, without
// a container engine: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
// as local processes, and one node (package node) whose pods are local processes, each
// in its own network namespace on a bridge. It is a development and test tool for
// `make demo` and the end-to-end tests, not a production runtime.
//
// Everything it starts is recorded under one directory (Dir); Down stops every process
// recorded there, removes the network devices it made and the directory.
package localcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// NodeName is the one node's name.
	NodeName = "local-node"
	// Bridge is the network device the pods' network namespaces hang off; the host's
	// address on it is HostIP, and the API server listens there so pods reach it.
	Bridge = "kubeoauth0"
	// HostIP is the host's address on the pod network.
	HostIP = "10.244.0.1"
	// PodCIDR is the pod network.
	PodCIDR = "10.244.0.0/24"
	// ServiceCIDR is the range ClusterIPs come from.
	ServiceCIDR         = "10.96.0.0/24"
	kubernetesServiceIP = "10.96.0.1"
	// APIServerPort is the API server's port on HostIP.
	APIServerPort = 6443
	// KubeletPort is the node's HTTPS API (logs) on HostIP.
	KubeletPort = 10250
	// DNSPort is the cluster DNS's port on HostIP.
	DNSPort    = 53
	etcdPort   = 2479
	addonsUser = "system:kubeoauth-local-addons"
)

// Options says where the cluster lives and what it runs.
type Options struct {
	// Dir holds the cluster's state: PKI, kubeconfigs, etcd data, logs, pod files.
	Dir string
	// Assets is the directory of etcd, kube-apiserver, kube-controller-manager and
	// kube-scheduler (hack/control-plane.sh prints it).
	Assets string
	// Self is the executable that runs the node (`<Self> node ...`): this tool.
	Self string
	// Images is the image map (images.yaml) handed to the node.
	Images string
	// Progress receives a line per step.
	Progress io.Writer
}

// DefaultDir is where the cluster lives unless KUBEOAUTH_CLUSTER_DIR says otherwise.
func DefaultDir() string {
	if d := os.Getenv("KUBEOAUTH_CLUSTER_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "kubeoauth-local-cluster")
}

// AdminKubeconfig is the path of the cluster-admin kubeconfig of the cluster in dir.
func AdminKubeconfig(dir string) string { return filepath.Join(dir, "admin.kubeconfig") }

// AuthenticationConfig is the path of the API server's structured authentication
// configuration (--authentication-config) of the cluster in dir. It starts with no
// JWT authenticator; the API server reloads the file when it changes, so a test or a
// user adds an OpenID Connect issuer without restarting it (docs/integrations/kubernetes.md).
func AuthenticationConfig(dir string) string { return filepath.Join(dir, "authentication-config.yaml") }

const emptyAuthenticationConfig = `apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt: []
`

// APIServerURL is the API server's address.
func APIServerURL() string { return "https://" + net.JoinHostPort(HostIP, strconv.Itoa(APIServerPort)) }

// component is one control-plane process.
type component struct {
	name string
	args []string
	// ready reports whether the component serves; nil means "its process is alive".
	ready func(ctx context.Context) error
}

// Up starts the cluster, or does nothing but report it when it already runs. Of a
// cluster that is partly up it starts the components that do not run, keeping the
// state: a restarted node re-adopts its pods' processes.
func Up(ctx context.Context, o Options) error {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if st := Status(o.Dir); st.Running() {
		say(o.Progress, "the local cluster already runs")
		return nil
	}
	for _, d := range []string{"logs", "pids", "etcd"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o700); err != nil {
			return err
		}
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"pod network (bridge " + Bridge + ", " + PodCIDR + ")", setUpNetwork},
		{"certificates and kubeconfigs", func() error { return writeCredentials(o.Dir) }},
	}
	for _, s := range steps {
		say(o.Progress, ">>", s.what)
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	for _, c := range components(o) {
		if pid := alivePid(pidPath(o.Dir, c.name)); pid != 0 {
			say(o.Progress, ">> "+c.name+" runs (pid "+strconv.Itoa(pid)+")")
		} else {
			say(o.Progress, ">> starting", c.name)
			if err := start(ctx, o.Dir, c); err != nil {
				return fmt.Errorf("%s did not start (log: %s): %w", c.name, logPath(o.Dir, c.name), err)
			}
		}
		if c.name == "kube-apiserver" {
			if err := installAddons(ctx, o.Dir); err != nil {
				return fmt.Errorf("cluster add-ons: %w", err)
			}
		}
	}
	return nil
}

func writeCredentials(dir string) error {
	if err := writePKI(dir, net.ParseIP(HostIP)); err != nil {
		return err
	}
	for id := range clientIdentities {
		if _, err := kubeconfig(dir, id, APIServerURL()); err != nil {
			return err
		}
	}
	// Kept across restarts of the API server: it holds what was added since.
	if _, err := os.Stat(AuthenticationConfig(dir)); errors.Is(err, fs.ErrNotExist) {
		return os.WriteFile(AuthenticationConfig(dir), []byte(emptyAuthenticationConfig), 0o600)
	}
	return nil
}

func components(o Options) []component {
	pki := func(f string) string { return filepath.Join(o.Dir, "pki", f) }
	kc := func(id string) string { return filepath.Join(o.Dir, id+".kubeconfig") }
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	return []component{
		{name: "etcd", args: []string{filepath.Join(o.Assets, "etcd"), "--data-dir", filepath.Join(o.Dir, "etcd"),
			"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
			"--listen-peer-urls", "http://127.0.0.1:" + strconv.Itoa(etcdPort+1), "--unsafe-no-fsync"},
			ready: httpReady(etcdURL+"/health", nil)},
		{name: "kube-apiserver", args: []string{filepath.Join(o.Assets, "kube-apiserver"),
			"--etcd-servers", etcdURL, "--bind-address", HostIP, "--advertise-address", HostIP,
			"--secure-port", strconv.Itoa(APIServerPort), "--service-cluster-ip-range", ServiceCIDR,
			"--tls-cert-file", pki("apiserver.crt"), "--tls-private-key-file", pki("apiserver.key"),
			"--client-ca-file", pki("ca.crt"), "--authorization-mode", "Node,RBAC",
			"--authentication-config", AuthenticationConfig(o.Dir),
			"--enable-admission-plugins", "NodeRestriction",
			"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file", pki("sa.pub"), "--service-account-signing-key-file", pki("sa.key"),
			"--kubelet-client-certificate", pki("apiserver-kubelet.crt"), "--kubelet-client-key", pki("apiserver-kubelet.key"),
			"--kubelet-certificate-authority", pki("ca.crt"), "--kubelet-preferred-address-types", "InternalIP",
			"--allow-privileged"},
			ready: httpReady(APIServerURL()+"/readyz", o)},
		{name: "kube-controller-manager", args: []string{filepath.Join(o.Assets, "kube-controller-manager"),
			"--kubeconfig", kc("kube-controller-manager"), "--authentication-kubeconfig", kc("kube-controller-manager"),
			"--authorization-kubeconfig", kc("kube-controller-manager"), "--bind-address", "127.0.0.1",
			"--service-account-private-key-file", pki("sa.key"), "--root-ca-file", pki("ca.crt"),
			"--use-service-account-credentials", "--leader-elect=false", "--cluster-name", "kubeoauth-local",
			// The node's lease lapses within seconds of its process dying, so its pods
			// leave EndpointSlices quickly instead of after the default 50 s.
			"--node-monitor-grace-period", "16s", "--node-monitor-period", "2s"}},
		{name: "kube-scheduler", args: []string{filepath.Join(o.Assets, "kube-scheduler"),
			"--kubeconfig", kc("kube-scheduler"), "--authentication-kubeconfig", kc("kube-scheduler"),
			"--authorization-kubeconfig", kc("kube-scheduler"), "--bind-address", "127.0.0.1", "--leader-elect=false"}},
		{name: "node", args: []string{o.Self, "node", "--dir", o.Dir, "--images", o.Images},
			ready: nodeReady(o.Dir)},
	}
}

// say writes a progress line; progress output that cannot be written is not worth
// failing for.
func say(w io.Writer, a ...any) { _, _ = fmt.Fprintln(w, a...) }

func logPath(dir, name string) string { return filepath.Join(dir, "logs", name+".log") }
func pidPath(dir, name string) string { return filepath.Join(dir, "pids", name) }

// start runs one component in its own session (it outlives this tool) with its output
// in logs/<name>.log, records its pid and waits until it serves.
func start(ctx context.Context, dir string, c component) error {
	logFile, err := os.OpenFile(logPath(dir, c.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }()
	cmd := exec.Command(c.args[0], c.args[1:]...) // #nosec G204 -- the cluster's own binaries
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := os.WriteFile(pidPath(dir, c.name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if c.ready == nil || c.ready(ctx) == nil {
			// The process is re-parented to init once this tool exits; Wait's
			// goroutine ends with it.
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 90s: %v", c.ready(ctx))
		}
	}
}

// httpReady checks a health URL; with o set, over TLS as the cluster admin.
func httpReady(url string, o any) func(context.Context) error {
	return func(ctx context.Context) error {
		client := http.DefaultClient
		if opts, ok := o.(Options); ok {
			tc, err := adminTLS(opts.Dir)
			if err != nil {
				return err
			}
			client = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		client.Timeout = 2 * time.Second
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

func adminTLS(dir string) (*tls.Config, error) {
	pki := filepath.Join(dir, "pki")
	pair, err := tls.LoadX509KeyPair(filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt")) // #nosec G304 -- our own state dir
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// ClusterStatus is what Status found.
type ClusterStatus struct {
	Dir        string
	Components map[string]int // name → pid, 0 when not running
	APIServer  error          // nil when /readyz answers
}

// Running reports whether every component runs and the API server is ready.
func (s ClusterStatus) Running() bool {
	if len(s.Components) == 0 || s.APIServer != nil {
		return false
	}
	for _, pid := range s.Components {
		if pid == 0 {
			return false
		}
	}
	return true
}

func (s ClusterStatus) String() string {
	var b strings.Builder
	for _, c := range componentNames {
		state := "not running"
		if pid := s.Components[c]; pid != 0 {
			state = "running (pid " + strconv.Itoa(pid) + ")"
		}
		fmt.Fprintf(&b, "%-24s %s\n", c, state)
	}
	if s.APIServer == nil {
		fmt.Fprintf(&b, "API server %s is ready\n", APIServerURL())
	} else {
		fmt.Fprintf(&b, "API server: %v\n", s.APIServer)
	}
	return b.String()
}

var componentNames = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node"}

// Status reports which of the cluster's processes run.
func Status(dir string) ClusterStatus {
	st := ClusterStatus{Dir: dir, Components: map[string]int{}}
	if _, err := os.Stat(dir); err != nil {
		st.APIServer = errors.New("no cluster in " + dir)
		return st
	}
	for _, c := range componentNames {
		st.Components[c] = alivePid(pidPath(dir, c))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st.APIServer = httpReady(APIServerURL()+"/readyz", Options{Dir: dir})(ctx)
	return st
}

// alivePid reads a pid file and returns the pid if that process still runs.
func alivePid(path string) int {
	data, err := os.ReadFile(path) // #nosec G304 -- our own state dir
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0
	}
	// A zombie has exited; it only waits for its parent to reap it.
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return 0
		}
	}
	return pid
}

// StartBackground runs this tool with args in the background as a process of the
// cluster in dir (Down stops it), replacing an earlier one of the same name, and
// waits until it accepts connections on addr.
func StartBackground(ctx context.Context, dir, name string, args []string, addr string) error {
	if pid := alivePid(pidPath(dir, name)); pid != 0 {
		stopProcess(pid, 5*time.Second)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	c := component{name: name, args: append([]string{self}, args...), ready: func(ctx context.Context) error {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}}
	if err := start(ctx, dir, c); err != nil {
		return fmt.Errorf("%s (log: %s): %w", name, logPath(dir, name), err)
	}
	say(os.Stdout, "forwarding "+addr+" in the background; log: "+logPath(dir, name))
	return nil
}

// Down stops every process of the cluster in dir (the node first, then the pods'
// processes, which outlive it, then the control plane), removes the pod network and
// the directory. It is safe to call on a cluster that is half up or already down.
func Down(dir string, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	var errs []error
	// Processes started with StartBackground first.
	if extra, err := os.ReadDir(filepath.Join(dir, "pids")); err == nil {
		for _, e := range extra {
			if !slices.Contains(componentNames, e.Name()) {
				if pid := alivePid(pidPath(dir, e.Name())); pid != 0 {
					say(progress, ">> stopping", e.Name())
					stopProcess(pid, 5*time.Second)
				}
			}
		}
	}
	for i := len(componentNames) - 1; i >= 0; i-- {
		name := componentNames[i]
		if pid := alivePid(pidPath(dir, name)); pid != 0 {
			say(progress, ">> stopping", name)
			stopProcess(pid, 20*time.Second)
		}
		if name == "node" {
			// The pods' processes run in their own sessions and outlive the node
			// process (so a node restart re-adopts them); down stops them too,
			// after the node, which would otherwise restart what it saw exit.
			errs = append(errs, stopPods(dir, progress))
		}
	}
	errs = append(errs, tearDownNetwork(dir))
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopProcess sends SIGTERM to the process's group, then SIGKILL after grace.
func stopProcess(pid int, grace time.Duration) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
}
