// Command manager is the kubeoauth operator: a controller-runtime manager that
// reconciles OAuthClient, ConsentGrant and TokenServer resources.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/netguard"
	"github.com/kubeoauth/kubeoauth/internal/pages"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// controllerConfig is the manager's controller settings. Tests that start several
// managers in one process turn off controller-runtime's check that a controller
// name is used once per process.
var controllerConfig config.Controller

// leaderElectionID names the operator's leader-election Lease unless
// --leader-election-id says otherwise (the chart gives each release its own).
const leaderElectionID = "manager.kubeoauth.io"

func main() {
	// The operator checks a TokenServer's page templates in a child of itself.
	pages.RunCheckIfChild()
	// ctrl.GetConfig reads KUBECONFIG, the in-cluster config or ~/.kube/config.
	if len(os.Args) > 1 && os.Args[1] == "self-test" {
		if err := selfTest(context.Background(), os.Args[2:], ctrl.GetConfig, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "self-test:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "delete-resources" {
		if err := deleteResources(ctrl.SetupSignalHandler(), os.Args[2:], ctrl.GetConfig, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "delete-resources:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:], ctrl.GetConfig); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

type options struct {
	metricsAddr      string
	metricsSecure    bool
	probeAddr        string
	leaderElect      bool
	watchNamespaces  string
	kubeAPIQPS       float64
	kubeAPIBurst     int
	resync           time.Duration
	leaderElectionNS string
	leaderElectionID string
	kubeconfig       string
	clientWorkers    int
	pprofAddr        string
	operatorNS       string
	operatorLabels   string
	externalAllow    string
}

// newFlagSet defines the manager's flags, apart from run so that a test can hold
// docs/operator.md's flag table against every flag defined here.
func newFlagSet(o *options, zapOpts *zap.Options) *flag.FlagSet {
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus /metrics endpoint; 0 disables it.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", false,
		"Serve /metrics over HTTPS (a self-signed certificate) to callers whose bearer token the API server "+
			"authenticates and authorizes for GET /metrics.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader so that only one replica reconciles at a time.")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "",
		"Namespace of the leader-election Lease (default: the pod's namespace).")
	fs.StringVar(&o.leaderElectionID, "leader-election-id", leaderElectionID,
		"Name of the leader-election Lease: two operators (each with its --watch-namespaces) in one namespace need two.")
	fs.StringVar(&o.watchNamespaces, "watch-namespaces", os.Getenv("WATCH_NAMESPACES"),
		"Comma-separated namespaces to watch (env WATCH_NAMESPACES); empty watches all.")
	// Raised from client-go's 5/10 so that 10,000 new clients (four writes each: the
	// finalizer, the Secret, an event, the status) do not queue behind the client-side
	// rate limiter for minutes; the API server's priority and fairness still protects it.
	fs.Float64Var(&o.kubeAPIQPS, "kube-api-qps", 500, "Queries per second to the Kubernetes API.")
	fs.IntVar(&o.kubeAPIBurst, "kube-api-burst", 1000, "Burst of queries to the Kubernetes API.")
	fs.DurationVar(&o.resync, "client-resync", 10*time.Minute,
		"How often unchanged OAuthClients are pushed to their token server again, repairing drift.")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "",
		"Path to a kubeconfig (default: KUBECONFIG, the in-cluster config, then ~/.kube/config).")
	fs.IntVar(&o.clientWorkers, "client-workers", 8, "OAuthClients reconciled at once, and ConsentGrants at once.")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "", "Address of net/http/pprof (default: off).")
	fs.StringVar(&o.operatorNS, "operator-namespace", os.Getenv("POD_NAMESPACE"),
		"Namespace of the operator's pods (env POD_NAMESPACE): the admin port's NetworkPolicy admits them. Empty: no NetworkPolicies.")
	fs.StringVar(&o.operatorLabels, "operator-pod-labels", "app.kubernetes.io/name=kubeoauth,app.kubernetes.io/component=manager",
		"Labels (k=v,...) of the operator's pods, which the admin port's NetworkPolicy admits.")
	fs.StringVar(&o.externalAllow, "external-admin-allow", "",
		"Comma-separated CIDRs an external TokenServer's adminURL may connect to although internal (private, loopback, link-local).")
	zapOpts.BindFlags(fs)
	return fs
}

func run(ctx context.Context, args []string, getConfig func() (*rest.Config, error)) error {
	var o options
	zapOpts := zap.Options{}
	fs := newFlagSet(&o, &zapOpts)
	if err := fs.Parse(args); err != nil {
		return err
	}
	podLabels, err := labels.ConvertSelectorToLabelsMap(o.operatorLabels)
	if err != nil || len(podLabels) == 0 {
		return fmt.Errorf("--operator-pod-labels %q: want k=v pairs separated by commas", o.operatorLabels)
	}
	externalAllow, err := netguard.ParseAllow(o.externalAllow)
	if err != nil {
		return fmt.Errorf("--external-admin-allow: %w", err)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(oauthv1alpha1.AddToScheme(scheme))

	if o.kubeconfig != "" {
		getConfig = func() (*rest.Config, error) { return clientcmd.BuildConfigFromFlags("", o.kubeconfig) }
	}
	cfg, err := getConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS = float32(o.kubeAPIQPS)
	cfg.Burst = o.kubeAPIBurst

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOptions(o),
		HealthProbeBindAddress:  o.probeAddr,
		PprofBindAddress:        o.pprofAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        o.leaderElectionID,
		LeaderElectionNamespace: o.leaderElectionNS,
		// The process ends as soon as the manager stops (run returns mgr.Start's
		// result), so the lease can be handed over at once: a replaced operator pod's
		// successor leads within seconds, not after the lease's 15 s expiry, which
		// otherwise stalls an upgrade in progress that long.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(namespaces(o.watchNamespaces)),
		Client:                        controllers.ClientOptions(),
		Controller:                    controllerConfig,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	if o.operatorNS == "" {
		log.Info("no --operator-namespace: bundled TokenServers get no NetworkPolicies")
	}
	if err := controllers.Setup(mgr, controllers.Options{ClientResync: o.resync, ClientWorkers: o.clientWorkers,
		Operator:           resources.OperatorPeer{Namespace: o.operatorNS, PodLabels: podLabels},
		ExternalAdminAllow: externalAllow}); err != nil {
		return fmt.Errorf("setting up controllers: %w", err)
	}
	if err := registerConditions(mgr.GetCache()); err != nil {
		return fmt.Errorf("registering the TokenServer condition metrics: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("starting manager", "watchNamespaces", o.watchNamespaces, "leaderElect", o.leaderElect)
	return mgr.Start(ctx)
}

// namespaces turns "a,b" into the cache's per-namespace configuration; nil means all.
func namespaces(list string) map[string]cache.Config {
	var out map[string]cache.Config
	for _, ns := range strings.Split(list, ",") {
		if ns = strings.TrimSpace(ns); ns == "" {
			continue
		}
		if out == nil {
			out = map[string]cache.Config{}
		}
		out[ns] = cache.Config{}
	}
	return out
}

// metricsOptions: with --metrics-secure, a scraper needs a token the API server
// accepts (TokenReview) for a user allowed GET on the non-resource URL /metrics
// (SubjectAccessReview), as kube-state-metrics and the kubelet ask; the operator's
// metrics name its controllers, namespaces and error rates, which not every pod in the
// cluster should read.
func metricsOptions(o options) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: o.metricsAddr}
	if o.metricsSecure {
		opts.SecureServing = true
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return opts
}
