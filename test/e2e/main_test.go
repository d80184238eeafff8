//go:build e2e

// Package e2e tests kubeoauth end to end on the local cluster (hack/localcluster):
// the operator installed by its Helm chart runs as a pod, the token server and its
// PostgreSQL run as StatefulSets driven by the real controllers. `make test-e2e`
// runs it (as root); it starts its own cluster, runs the demo on it, then the
// scenarios below, and stops the cluster and removes its files when done.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/localcluster"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// suite is the cluster the tests share.
var suite struct {
	dir, repo, kubectl, helm, tool string
	demoOutput                     string
	c                              client.Client
	cfg                            *rest.Config
	issuer                         string
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) (code int) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "the end-to-end tests need root (the local cluster makes network and mount namespaces)")
		return 1
	}
	if _, err := os.Stat("/sys/class/net/" + localcluster.Bridge); err == nil {
		fmt.Fprintln(os.Stderr, "a local cluster already runs on this machine (bridge "+localcluster.Bridge+
			"); stop it first with make demo-down")
		return 1
	}
	// controller-runtime's client logs through its global logger; the tests read
	// their own output.
	ctrllog.SetLogger(logr.Discard())
	suite.repo = testenv.RepoRoot()
	assets := os.Getenv("KUBEOAUTH_E2E_ASSETS")
	suite.helm = os.Getenv("KUBEOAUTH_HELM")
	if assets == "" || suite.helm == "" {
		fmt.Fprintln(os.Stderr, "KUBEOAUTH_E2E_ASSETS and KUBEOAUTH_HELM are not set: run the tests with make test-e2e")
		return 1
	}
	suite.kubectl = filepath.Join(assets, "kubectl")
	suite.tool = filepath.Join(suite.repo, "bin", "localcluster")
	dir, err := os.MkdirTemp("", "kubeoauth-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	suite.dir = filepath.Join(dir, "cluster")
	defer func() {
		out, err := exec.Command(suite.tool, "down", "--dir", suite.dir).CombinedOutput() // #nosec G204 -- our tool
		if err != nil {
			fmt.Fprintf(os.Stderr, "stopping the cluster: %v\n%s", err, out)
			code = 1
		}
		// `down` leaves nothing behind: no process of the cluster's, no directory.
		if left := processesUnder(dir); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "processes left running after down:\n%s\n", strings.Join(left, "\n"))
			code = 1
		}
		if _, err := os.Stat(suite.dir); err == nil {
			fmt.Fprintln(os.Stderr, "down left the cluster directory", suite.dir)
			code = 1
		}
		_ = os.RemoveAll(dir)
	}()
	if err := runDemo(assets); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", localcluster.AdminKubeconfig(suite.dir))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	suite.cfg = cfg
	s := scheme.Scheme
	if err := oauthv1alpha1.AddToScheme(s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if suite.c, err = client.New(cfg, client.Options{Scheme: s}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code = m.Run()
	if code != 0 {
		dumpLogs()
	}
	return code
}

// runDemo runs `make demo`'s program on a cluster of the suite's own: it brings up
// everything the scenarios need, and its output is what the first test checks.
func runDemo(assets string) error {
	start := time.Now()
	cmd := exec.Command(filepath.Join(suite.repo, "bin", "demo"), "--dir", suite.dir, "--kubectl", suite.kubectl, // #nosec G204 -- our demo
		"--helm", suite.helm, "--assets", assets, "--localcluster", suite.tool)
	cmd.Dir = suite.repo
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	suite.demoOutput = out.String()
	suite.issuer = "http://127.0.0.1:4444"
	fmt.Fprintf(os.Stderr, "demo ran in %.1fs\n", time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("the demo failed: %v\n%s", err, suite.demoOutput)
	}
	return nil
}

// dumpLogs prints what a failed run needs for a diagnosis: the pods and the
// operator's and token servers' recent logs.
func dumpLogs() {
	for _, args := range [][]string{
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "tokenservers,oauthclients,consentgrants", "-A"},
		{"-n", "kubeoauth-system", "logs", "deploy/kubeoauth-manager", "--tail", "60"},
		{"-n", "platform", "logs", "auth-blue-0", "--tail", "30"},
	} {
		out, _ := kubectl(context.Background(), args...)
		fmt.Fprintf(os.Stderr, "\n$ kubectl %s\n%s", strings.Join(args, " "), out)
	}
	// The upgrade scenarios' namespaces: what the operator wrote and saw.
	if out, err := kubectl(context.Background(), "get", "ns", "-o", "name"); err == nil {
		for _, ns := range strings.Fields(out) {
			ns = strings.TrimPrefix(ns, "namespace/")
			if !strings.HasPrefix(ns, "up-") {
				continue
			}
			for _, args := range [][]string{
				{"-n", ns, "get", "tokenserver", "auth", "-o", "yaml"},
				{"-n", ns, "get", "pods,jobs,statefulsets,endpointslices", "-o", "wide", "--show-labels"},
				{"-n", ns, "get", "events", "--sort-by", ".lastTimestamp"},
			} {
				out, _ := kubectl(context.Background(), args...)
				fmt.Fprintf(os.Stderr, "\n$ kubectl %s\n%s", strings.Join(args, " "), out)
			}
		}
	}
	if out, err := kubectl(context.Background(), "-n", "kubeoauth-system", "logs", "deploy/kubeoauth-manager"); err == nil {
		for line := range strings.Lines(out) {
			if strings.Contains(line, `"level":"error"`) || strings.Contains(line, "could not be read") {
				fmt.Fprint(os.Stderr, line)
			}
		}
	}
	// The node's own log (without virtual-kubelet's debug lines): what it did with
	// the pods.
	if data, err := os.ReadFile(filepath.Join(suite.dir, "logs", "node.log")); err == nil {
		var lines []string
		for line := range strings.Lines(string(data)) {
			if !strings.Contains(line, `"level":"debug"`) {
				lines = append(lines, line)
			}
		}
		fmt.Fprintf(os.Stderr, "\n$ tail node.log\n%s", strings.Join(lines[max(0, len(lines)-60):], ""))
	}
}

func kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, suite.kubectl, args...) // #nosec G204 -- the test's own commands
	cmd.Env = append(os.Environ(), "KUBECONFIG="+localcluster.AdminKubeconfig(suite.dir))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// eventually polls check until it succeeds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// processesUnder lists the running processes whose command line names a path under
// dir (the cluster's components and the pods' shims all do).
func processesUnder(dir string) []string {
	procs, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range procs {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == strconv.Itoa(os.Getpid()) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")) // #nosec G304 -- /proc
		if err != nil {
			continue
		}
		if args := strings.ReplaceAll(string(cmdline), "\x00", " "); strings.Contains(args, dir+"/") {
			out = append(out, e.Name()+": "+args)
		}
	}
	return out
}
