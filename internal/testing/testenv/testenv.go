// Package testenv starts a real kube-apiserver and etcd (controller-runtime's envtest)
// with kubeoauth's CRDs installed, for tests that need the API server's own validation,
// defaulting, status subresource and finalizers.
//
// The binaries come from KUBEBUILDER_ASSETS when set, otherwise from
// hack/control-plane.sh, which builds them from source once and caches them.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/prometheus/procfs"

	"github.com/kubeoauth/kubeoauth/internal/testing/reaper"
)

// Env is a running control plane.
type Env struct {
	Config *rest.Config
	// CRDDir holds the generated CRDs that were installed.
	CRDDir string

	env    *envtest.Environment
	reaper *reaper.Reaper
}

// RepoRoot is the root of this checkout.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Start starts etcd and kube-apiserver and installs the CRDs. Call Stop when done (in
// TestMain, after m.Run); if the test binary dies first, a reaper stops them.
func Start() (*Env, error) {
	assets, err := assetsDir()
	if err != nil {
		return nil, err
	}
	root := RepoRoot()
	e := &Env{CRDDir: filepath.Join(root, "config", "crd", "bases")}
	e.env = &envtest.Environment{
		CRDDirectoryPaths:     []string{e.CRDDir},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := e.env.Start()
	if err != nil {
		_ = e.env.Stop()
		return nil, fmt.Errorf("starting envtest with binaries from %s: %w", assets, err)
	}
	e.Config = cfg
	e.reaper, err = reaper.Watch(childrenIn(assets), []string{
		e.env.ControlPlane.Etcd.DataDir,
		e.env.ControlPlane.APIServer.CertDir,
	})
	if err != nil {
		_ = e.env.Stop()
		return nil, err
	}
	return e, nil
}

// WriteKubeconfig writes a kubeconfig for a cluster-admin user of this API server to
// path, for kubectl and other tools run against it.
func (e *Env) WriteKubeconfig(path string) error {
	user, err := e.env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	data, err := user.KubeConfig()
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// Stop stops the control plane and removes its files.
func (e *Env) Stop() error {
	err := e.env.Stop()
	e.reaper.Stop()
	return err
}

func assetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	script := filepath.Join(RepoRoot(), "hack", "control-plane.sh")
	var stderr bytes.Buffer
	cmd := exec.Command(script) // #nosec G204 -- our own script
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("KUBEBUILDER_ASSETS is unset and %s failed: %w\n%s", script, err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// childrenIn lists this process's children whose executable lies in dir: the etcd and
// kube-apiserver envtest just started. envtest starts each in its own process group.
func childrenIn(dir string) []reaper.Target {
	all, _ := procfs.AllProcs()
	var targets []reaper.Target
	self := os.Getpid()
	for _, p := range all {
		st, err := p.Stat()
		if err != nil || st.PPID != self {
			continue
		}
		exe, err := p.Executable()
		if err != nil || filepath.Dir(exe) != filepath.Clean(dir) {
			continue
		}
		targets = append(targets, reaper.Target{PID: p.PID, Signal: "KILL", Group: true})
	}
	return targets
}

// HostIP returns an IPv4 address of this machine that an EndpointSlice may hold: the
// API server rejects loopback and link-local endpoint addresses, so tests that put a
// server of theirs behind an EndpointSlice bind it here.
func HostIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip := n.IP.To4(); ip != nil && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				return ip.String(), nil
			}
		}
	}
	return "", errors.New("this machine has no non-loopback, non-link-local IPv4 address; " +
		"the API server rejects loopback addresses in EndpointSlices")
}
