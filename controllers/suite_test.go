package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/pages"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
	"github.com/kubeoauth/kubeoauth/internal/testing/testlog"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

// The suite runs a real kube-apiserver (envtest), a real token server on a real
// PostgreSQL, and the operator's reconcilers in a manager, as in production.
var (
	k8s        client.Client
	admin      *adminapi.HTTPClient
	issuer     string
	stopServer context.CancelFunc
	serverDone chan error
	// What the token server and the manager log, printed by a test that fails.
	serverLog, managerLog testlog.Buffer
	adminToken            = "operator-admin-token-0123456789abcdef"
	// kubeconfig is a cluster-admin's, for kubectl as a user runs it.
	kubeconfig  string
	resyncEvery = time.Second
	// operatorClock is the reconcilers' clock: rotation tests move it by hand
	// (advanceOperatorClock) instead of waiting on real timers.
	operatorClock = clocktesting.NewFakeClock(time.Now())
	// operator is where the suite says the operator's pods run, for NetworkPolicies.
	operator = resources.OperatorPeer{Namespace: "kubeoauth-system",
		PodLabels: map[string]string{"app.kubernetes.io/name": "kubeoauth", "app.kubernetes.io/component": "manager"}}
)

func TestMain(m *testing.M) {
	// The operator checks page templates in a child of its binary: this one here.
	pages.RunCheckIfChild()
	os.Exit(run(m))
}

// The operator's manager, which restartOperator replaces as a new operator pod would.
var (
	mgrConfig    *rest.Config
	mgrScheme    *runtime.Scheme
	stopOperator func() error
)

// startOperator starts the reconcilers in a manager; again is a manager after the
// first, whose controllers' names are taken already.
func startOperator(again bool) error {
	opts := ctrl.Options{Scheme: mgrScheme, Metrics: metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0", Cache: controllers.CacheOptions(nil), Client: controllers.ClientOptions()}
	if again {
		opts.Controller = config.Controller{SkipNameValidation: ptr.To(true)}
	}
	mgr, err := ctrl.NewManager(mgrConfig, opts)
	if err != nil {
		return err
	}
	if err := controllers.Setup(mgr, controllers.Options{ClientResync: resyncEvery, ServerHealthInterval: time.Second,
		MirrorPoll: time.Second, Operator: operator, Clock: operatorClock,
		// The suite's token server listens on 127.0.0.1; TestExternalAdminURLGuard
		// uses another loopback address, which stays refused.
		ExternalAdminAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopOperator = func() error {
		cancel()
		return <-done
	}
	return nil
}

// restartOperator stops the manager and, once act has run, starts a new one: the
// operator's pod deleted and replaced. Nothing reconciles in between.
func restartOperator(t *testing.T, act func()) {
	t.Helper()
	if err := stopOperator(); err != nil {
		t.Fatal(err)
	}
	act()
	if err := startOperator(true); err != nil {
		t.Fatal(err)
	}
}

func run(m *testing.M) int {
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	pg, err := testpg.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = pg.Stop() }()
	dir, err := os.MkdirTemp("", "kubeoauth-controllers-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := startTokenServer(pg.DSN, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		stopServer()
		if err := <-serverDone; err != nil {
			fmt.Fprintln(os.Stderr, "token server:", err)
		}
	}()

	ctrl.SetLogger(zap.New(zap.WriteTo(&managerLog)))
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(oauthv1alpha1.AddToScheme(scheme))
	// The reconcilers run as a user holding only the ClusterRole generated from the
	// RBAC markers (config/rbac/role.yaml), so a permission missing there fails here.
	if mgrConfig, err = asGeneratedRole(env.Config, scheme); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mgrScheme = scheme
	if err := startOperator(false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := stopOperator(); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	if k8s, err = client.New(env.Config, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// asGeneratedRole binds config/rbac/role.yaml to a test user and returns cfg
// impersonating that user.
func asGeneratedRole(cfg *rest.Config, scheme *runtime.Scheme) (*rest.Config, error) {
	data, err := os.ReadFile("../config/rbac/role.yaml")
	if err != nil {
		return nil, err
	}
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(data, &role); err != nil {
		return nil, fmt.Errorf("config/rbac/role.yaml: %w", err)
	}
	const user = "kubeoauth-manager-under-test"
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := admin.Create(ctx, &role); err != nil {
		return nil, err
	}
	if err := admin.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}}); err != nil {
		return nil, err
	}
	out := rest.CopyConfig(cfg)
	out.Impersonate = rest.ImpersonationConfig{UserName: user}
	return out, nil
}

func startTokenServer(dsn, dir string) error {
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		return err
	}
	if _, err := postgres.Migrate(context.Background(), db, postgres.Migrations(), postgres.MigrateOptions{}); err != nil {
		return err
	}
	_ = db.Close()
	key, err := signingkey.Generate(signingkey.ES256)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), key, 0o600); err != nil {
		return err
	}
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	adm, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	issuer = "http://" + pub.Addr().String()
	admin = &adminapi.HTTPClient{BaseURL: "http://" + adm.Addr().String(), Token: adminToken}
	var ctx context.Context
	ctx, stopServer = context.WithCancel(context.Background())
	serverDone = make(chan error, 1)
	go func() {
		serverDone <- tokenserver.Serve(ctx, tokenserver.Options{
			DSN: dsn, Issuer: issuer, PublicListener: pub, AdminListener: adm, AdminToken: adminToken,
			SigningKeyFile: filepath.Join(dir, "key.pem"), HMACSecret: []byte("hmac-secret-for-the-operator-tests-0123"),
			AccessTokenFormat: oauth.FormatOpaque, AccessTokenLifespan: time.Hour, RefreshTokenLifespan: time.Hour,
			IDTokenLifespan: time.Hour, AuthorizeCodeLifespan: time.Minute, ShutdownTimeout: 5 * time.Second,
			JanitorInterval: time.Hour, Log: slog.New(slog.NewTextHandler(&serverLog, nil)),
		})
	}()
	for range 100 {
		if admin.Health(context.Background()) == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the token server never became ready")
}

// namespace creates a namespace named base plus a random suffix, with labels, and
// returns its name: envtest has no namespace controller to delete namespaces, so each
// test (and each -count run) takes fresh ones. Every test starts with one, so this is
// also where a test arranges for the servers' logs to be printed if it fails.
func namespace(t *testing.T, base string, labels map[string]string) string {
	t.Helper()
	serverLog.DumpOnFailure(t, "token server")
	managerLog.DumpOnFailure(t, "manager")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: base + "-", Labels: labels}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// externalServer creates a TokenServer pointing at the suite's token server, with its
// admin token Secret, and waits for it to be Ready.
func externalServer(t *testing.T, ns string, mutate func(*oauthv1alpha1.TokenServer)) {
	t.Helper()
	ctx := context.Background()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-admin"},
		StringData: map[string]string{"token": adminToken}}
	if err := k8s.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), External: &oauthv1alpha1.ExternalTokenServer{
			// The suite's token server is on loopback, without TLS.
			AdminURL: admin.BaseURL, Insecure: true, TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "auth-admin"}}}}
	if mutate != nil {
		mutate(ts)
	}
	if err := k8s.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
}

// waitCondition waits until obj's condition has status (and reason, when given).
func waitCondition(t *testing.T, obj client.Object, condType string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	var last []metav1.Condition
	eventually(t, 20*time.Second, fmt.Sprintf("%s %s: %s=%s %s", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), condType, status, reason), func() bool {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return false
		}
		last = conditionsOf(obj)
		for _, c := range last {
			if c.Type == condType && c.Status == status && (reason == "" || c.Reason == reason) {
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("conditions: %+v", last) })
}

func conditionsOf(obj client.Object) []metav1.Condition {
	switch o := obj.(type) {
	case *oauthv1alpha1.TokenServer:
		return o.Status.Conditions
	case *oauthv1alpha1.OAuthClient:
		return o.Status.Conditions
	case *oauthv1alpha1.ConsentGrant:
		return o.Status.Conditions
	}
	return nil
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			if detail != nil {
				msg = detail()
			}
			t.Fatalf("not within %s: %s %s", timeout, what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }

// advanceOperatorClock starts the operator's clock at the real time and returns a
// function that moves it forward by d. The clock is set back to the real time when
// the test ends. The reconcilers act on the new time at their next pass: poke the
// object to have it now.
func advanceOperatorClock(t *testing.T) func(d time.Duration) {
	t.Helper()
	operatorClock.SetTime(time.Now())
	t.Cleanup(func() { operatorClock.SetTime(time.Now()) })
	return operatorClock.Step
}

// poke changes an annotation of obj, which brings a reconcile pass at once (the
// reconcilers' predicates pass annotation changes).
func poke(t *testing.T, obj client.Object) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		ann := obj.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann["test.kubeoauth.io/poke"] = strconv.FormatInt(time.Now().UnixNano(), 10)
		obj.SetAnnotations(ann)
		return k8s.Update(context.Background(), obj)
	})
	if err != nil {
		t.Fatal(err)
	}
}
