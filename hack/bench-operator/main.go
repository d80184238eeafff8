// Command bench-operator measures the operator (`make bench-operator`): on a real
// kube-apiserver (envtest) with a real token server on a throwaway PostgreSQL, it
// runs cmd/manager as its own process, applies N OAuthClients, and reports the time
// until all are Ready, the writes a no-op resync makes (to the API server and to the
// token server), and the manager's peak RSS. docs/benchmarks.md records the figures.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/testing/devserver"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

var (
	count    = flag.Int("n", 10000, "OAuthClients to apply")
	mgrArgs  = flag.String("manager-args", "", "extra flags for the manager, space-separated")
	profile  = flag.String("profile-dir", "", "save the manager's heap profile at the end here")
	memLimit = flag.String("gomemlimit", "", "GOMEMLIMIT for the manager, as the Helm chart sets it from the memory limit")
	resync   = flag.Duration("resync", 30*time.Second, "the manager's --client-resync, waited twice for the no-op resync")
	policy   = flag.Bool("finalizer-policy", true, "install the finalizer's MutatingAdmissionPolicy as `make deploy` does (config/admission)")
	cpuProf  = flag.Duration("cpu-profile", 0,
		"with -profile-dir: CPU profiles of kube-apiserver and the manager this long from the first create")
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-operator:", err)
		os.Exit(1)
	}
}

func run() error {
	flag.Parse()
	ctrllog.SetLogger(logr.Discard()) // the bench's own informer logs nothing of interest
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kubeoauth-bench-operator-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	fmt.Println("==> building cmd/manager and cmd/tokenserver")
	if err := devserver.Build(dir, "manager", "tokenserver"); err != nil {
		return err
	}
	fmt.Println("==> starting kube-apiserver, PostgreSQL and the token server")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	dev, err := devserver.Start(ctx, devserver.Options{})
	defer func() { _ = dev.Stop() }()
	if err != nil {
		return err
	}
	addrs, err := devserver.FreeAddrs(3)
	if err != nil {
		return err
	}
	pub, adm, pprofAddr := addrs[0], addrs[1], addrs[2]
	_, admin, err := dev.Serve(ctx, filepath.Join(dir, "tokenserver"), pub, adm)
	if err != nil {
		return err
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(oauthv1alpha1.AddToScheme(scheme))
	cfg := env.Config
	cfg.QPS, cfg.Burst = 500, 1000
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "platform"}}); err != nil {
		return err
	}
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "platform", Name: "auth-admin"},
		StringData: map[string]string{"token": dev.AdminToken}}); err != nil {
		return err
	}
	if err := k8s.Create(ctx, &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: "platform", Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL("http://" + pub), External: &oauthv1alpha1.ExternalTokenServer{
			AdminURL: admin.BaseURL, Insecure: true, // a loopback token server started by the benchmark
			TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "auth-admin"}}}}); err != nil {
		return err
	}

	if *policy {
		if err := installFinalizerPolicy(ctx, k8s); err != nil {
			return err
		}
	}

	// The manager and the load generator authenticate as a cluster's pods do, with
	// ServiceAccount tokens: the manager holding the generated ClusterRole (as `make
	// deploy` grants it), the load generator (a GitOps tool) cluster-admin.
	role, err := generatedRole()
	if err != nil {
		return err
	}
	mgrCfg, err := serviceAccount(ctx, k8s, cfg, "kubeoauth-system", "kubeoauth-manager", role)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(mgrCfg, kubeconfig); err != nil {
		return err
	}
	clusterAdmin := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "cluster-admin"}}
	gitopsCfg, err := serviceAccount(ctx, k8s, cfg, "gitops", "sync", clusterAdmin)
	if err != nil {
		return err
	}
	gitopsCfg.QPS, gitopsCfg.Burst = cfg.QPS, cfg.Burst
	gitops, err := client.New(gitopsCfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}

	mgr := exec.Command(filepath.Join(dir, "manager"), "--kubeconfig", kubeconfig, "--metrics-bind-address", "0", // #nosec G204
		"--health-probe-bind-address", "0", "--client-resync", resync.String(), "--zap-log-level", "error",
		// The token server runs on loopback, an address the manager refuses unless allowed.
		"--external-admin-allow", "127.0.0.1")
	mgr.Args = append(mgr.Args, strings.Fields(*mgrArgs)...)
	if *profile != "" {
		mgr.Args = append(mgr.Args, "--pprof-bind-address", pprofAddr)
	}
	mgr.Stderr = os.Stderr
	if *memLimit != "" {
		mgr.Env = append(os.Environ(), "GOMEMLIMIT="+*memLimit)
	}
	if err := mgr.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- mgr.Wait() }()
	defer func() {
		_ = mgr.Process.Kill()
		if err := <-exited; err != nil && !strings.Contains(err.Error(), "killed") {
			fmt.Println("manager stopped:", err)
		}
	}()

	// Ready is counted from a watch (an informer), as each object's events arrive: not
	// by listing 10,000 objects over and over from the API server (that loaded it more
	// than the operator did), nor from the informer's cache (each List deep-copies
	// every object: a fifth of a core, taken from the processes measured). It starts
	// before the creates, as a GitOps tool's own watch would be running: the API server
	// sends it the events it encoded for the manager's watch anyway, where starting it
	// after them cost a LIST of every object at once.
	watched, err := cache.New(gitopsCfg, cache.Options{Scheme: scheme, DefaultNamespaces: map[string]cache.Config{"platform": {}}})
	if err != nil {
		return err
	}
	cctx, stopCache := context.WithCancel(ctx)
	defer stopCache()
	go func() { _ = watched.Start(cctx) }()
	informer, err := watched.GetInformer(ctx, &oauthv1alpha1.OAuthClient{})
	if err != nil {
		return err
	}
	ready := newReadyCounter(*count)
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { ready.see(o) },
		UpdateFunc: func(_, o any) { ready.see(o) },
	}); err != nil {
		return err
	}
	watched.WaitForCacheSync(ctx)

	// The requests of the run, counted by the API server between the first create and
	// the last Ready: the bench's own creates (one POST per client) are among them.
	reqBefore, err := scrapeRequests(cfg)
	if err != nil {
		return err
	}
	cpuBefore := cpuByCommand()
	fmt.Printf("==> applying %d OAuthClients\n", *count)
	begin := time.Now()
	profiled := make(chan error, 2)
	if *profile != "" && *cpuProf > 0 {
		go func() {
			profiled <- saveCPUProfile(cfg, "", *cpuProf, filepath.Join(*profile, "apiserver-cpu.pprof"))
		}()
		go func() {
			profiled <- saveCPUProfile(nil, "http://"+pprofAddr, *cpuProf, filepath.Join(*profile, "manager-cpu.pprof"))
		}()
	} else {
		profiled <- nil
		profiled <- nil
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	work := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range work {
				oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: "platform", Name: fmt.Sprintf("client-%05d", i)},
					Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth"},
						ClientName: fmt.Sprintf("Client %d", i), GrantTypes: []oauthv1alpha1.GrantType{"client_credentials"},
						Scopes: []oauthv1alpha1.Scope{"zones.read"}}}
				if err := gitops.Create(ctx, oc); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	for i := range *count {
		work <- i
	}
	close(work)
	wg.Wait()
	applied := time.Since(begin)
	fmt.Printf("applied in %s (%d failed)\n", applied.Round(time.Millisecond), failed.Load())

	select {
	case <-ready.all:
	case err := <-exited:
		exited <- err
		return fmt.Errorf("the manager exited: %v", err)
	case <-time.After(15*time.Minute - time.Since(begin)):
		return fmt.Errorf("only %d of %d Ready after 15 minutes", ready.n(), *count)
	}
	allReady := time.Since(begin)
	cpuAfter := cpuByCommand()
	fmt.Printf("all %d Ready %s after the first apply\n", *count, allReady.Round(time.Millisecond))

	versions := func() (map[string]string, error) {
		out := map[string]string{}
		var ocs oauthv1alpha1.OAuthClientList
		if err := k8s.List(ctx, &ocs, client.InNamespace("platform")); err != nil {
			return nil, err
		}
		for _, o := range ocs.Items {
			out["oac/"+o.Name] = o.ResourceVersion
		}
		var secs corev1.SecretList
		if err := k8s.List(ctx, &secs, client.InNamespace("platform")); err != nil {
			return nil, err
		}
		for _, s := range secs.Items {
			out["secret/"+s.Name] = s.ResourceVersion
		}
		return out, nil
	}
	serverState := func() (map[string]time.Time, error) {
		cs, err := admin.ListClients(ctx)
		out := map[string]time.Time{}
		for _, c := range cs {
			out[c.ID] = c.UpdatedAt
		}
		return out, err
	}
	time.Sleep(3 * time.Second) // let the last status patches and events land
	reqAfter, err := scrapeRequests(cfg)
	if err != nil {
		return err
	}
	printPerClient(reqBefore, reqAfter, *count)
	printCPU(cpuBefore, cpuAfter, allReady, *count)
	v1, err := versions()
	if err != nil {
		return err
	}
	s1, err := serverState()
	if err != nil {
		return err
	}
	fmt.Printf("==> waiting two resync periods (%s)\n", 2**resync)
	time.Sleep(2**resync + 5*time.Second)
	v2, err := versions()
	if err != nil {
		return err
	}
	s2, err := serverState()
	if err != nil {
		return err
	}
	apiWrites, serverChanges := 0, 0
	for k, v := range v1 {
		if v2[k] != v {
			apiWrites++
		}
	}
	for k, v := range s1 {
		if !s2[k].Equal(v) {
			serverChanges++
		}
	}
	fmt.Printf("no-op resync: %d API server writes, %d token-server changes (over %d objects)\n", apiWrites, serverChanges, len(v1))
	fmt.Printf("manager peak RSS: %s\n", devserver.PeakRSS(mgr.Process.Pid))
	for range 2 {
		if err := <-profiled; err != nil {
			return fmt.Errorf("CPU profile: %w", err)
		}
	}
	if *profile != "" {
		return save(http.DefaultClient, "http://"+pprofAddr+"/debug/pprof/heap", filepath.Join(*profile, "heap.pprof"))
	}
	return nil
}

// saveCPUProfile saves a CPU profile of d to path: of kube-apiserver (its
// /debug/pprof, on by default, for the bench's cluster-admin) with cfg, else of the
// manager's pprof server at base.
func saveCPUProfile(cfg *rest.Config, base string, d time.Duration, path string) error {
	hc := &http.Client{}
	if cfg != nil {
		var err error
		if hc, err = rest.HTTPClientFor(cfg); err != nil {
			return err
		}
		base = strings.TrimSuffix(cfg.Host, "/")
	}
	hc.Timeout = d + time.Minute
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, int(d.Seconds()))
	// The manager, started a moment ago, may not listen yet.
	err := save(hc, url, path)
	for deadline := time.Now().Add(30 * time.Second); err != nil && strings.Contains(err.Error(), "connection refused") &&
		time.Now().Before(deadline); err = save(hc, url, path) {
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// readyCounter counts the OAuthClients whose Ready condition is True, from an
// informer's events; all is closed when want are.
type readyCounter struct {
	mu    sync.Mutex
	ready map[string]bool
	want  int
	all   chan struct{}
}

func newReadyCounter(want int) *readyCounter {
	return &readyCounter{ready: map[string]bool{}, want: want, all: make(chan struct{})}
}

func (r *readyCounter) see(o any) {
	oc, ok := o.(*oauthv1alpha1.OAuthClient)
	if !ok || !meta.IsStatusConditionTrue(oc.Status.Conditions, oauthv1alpha1.ConditionReady) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ready[oc.Name] || len(r.ready) == r.want {
		return
	}
	r.ready[oc.Name] = true
	if len(r.ready) == r.want {
		close(r.all)
	}
}

func (r *readyCounter) n() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ready)
}

func save(hc *http.Client, url, path string) error {
	resp, err := hc.Get(url) // #nosec G107 -- the manager or API server we started
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path) // #nosec G304
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		return err
	}
	return f.Close()
}
