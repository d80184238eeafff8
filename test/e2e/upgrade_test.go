//go:build e2e

package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/localcluster"
	"github.com/kubeoauth/kubeoauth/internal/localcluster/netsvc"
	"github.com/kubeoauth/kubeoauth/internal/testing/loadgen"
)

// The images of the upgrade scenarios: the ordinary build (the demo's image) and the
// test builds of make tokenserver-variants, loaded from testdata (docs/upgrades.md,
// "Test builds"). The versions are what each answers in X-Kubeoauth-Version (make
// builds with VERSION=dev).
const (
	imageV1        = "ghcr.io/kubeoauth/tokenserver:v0.1.0"
	imageV2        = "ghcr.io/kubeoauth/tokenserver:v2-test"
	imageV3        = "ghcr.io/kubeoauth/tokenserver:v3-test"
	imageCrashloop = "ghcr.io/kubeoauth/tokenserver:crashloop-test"
	imageErrors    = "ghcr.io/kubeoauth/tokenserver:errors-test"
	imageBadExpand = "ghcr.io/kubeoauth/tokenserver:badexpand-test"
	versionV2      = "dev-v2test"
	versionV3      = "dev-v3-v2test"
)

// grace is the TokenServers' refreshGracePeriod: a refresh whose answer a restart
// lost can be made again with the same token (loadgen needs it; see docs/upgrades.md,
// "The ledger load test").
const grace = 30 * time.Second

// Blue-green upgrades on the local cluster, under the ledger load: each scenario on
// a TokenServer of its own, in a namespace of its own.
func testUpgrades(t *testing.T) {
	out, err := exec.Command(suite.tool, "load", "--dir", suite.dir, "--bin", filepath.Join(suite.repo, "bin"), // #nosec G204 -- our tool
		filepath.Join(suite.repo, "test", "e2e", "testdata", "tokenserver-variants.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("loading the test builds: %v\n%s", err, out)
	}
	start := time.Now()
	for _, s := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"SharedUnderLoad", testSharedUpgrade},
		{"OperatorDeletedMidUpgrade", testUpgradeOperatorDeleted},
		{"CrashLoopingGreenRolledBack", testUpgradeCrashLoop},
		{"GreenAnswering500sRolledBackByAnalysis", testUpgradeErrors},
		{"FailingExpandMigrationLeavesBlue", testUpgradeBadExpand},
		{"ImageChangedMidUpgradeAndSetBack", testUpgradeRetarget},
		{"CopyUnderLoad", testCopyUpgrade},
		{"CopyInterrupted", testCopyUpgradeInterrupted},
		{"CopyRolledBackAfterCutover", testCopyRolledBackAfterCutover},
	} {
		t.Run(s.name, s.run)
	}
	t.Logf("upgrade scenarios took %.0fs", time.Since(start).Seconds())
}

// upgradeEnv is a TokenServer of a scenario, reached from the test through its
// public Service, with the clients and users the load needs.
type upgradeEnv struct {
	ns, issuer string
	ts         *oauthv1alpha1.TokenServer
	cfg        loadgen.Config
}

var upgradeUsers = []string{"alice", "bob", "carol"}

// newUpgradeEnv creates namespace ns with a two-replica bundled TokenServer of
// imageV1 and the upgrade settings up, a port-forward to its public Service, and the
// OAuthClients of the load: a client_credentials machine and introspector, a
// skipConsent web client for refresh chains (the namespace is first-party), and a
// partner client that bob and carol use only under ConsentGrants.
func newUpgradeEnv(t *testing.T, ns string, up oauthv1alpha1.UpgradeSettings) *upgradeEnv {
	t.Helper()
	ctx := t.Context()
	e := &upgradeEnv{ns: ns}
	e.issuer = forwardService(t, ns, "auth")
	users, lines := map[string]string{}, ""
	for _, u := range upgradeUsers {
		users[u] = "pw-" + u + "-" + ns
		h, err := bcrypt.GenerateFromPassword([]byte(users[u]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines += u + ":" + string(h) + "\n"
	}
	nsSel := metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}
	e.ts = &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(e.issuer), Image: imageV1, Replicas: ptr.To[int32](2),
			Database: &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{
				StorageSize: resource.MustParse("1Gi")}},
			Login:                &oauthv1alpha1.LoginSpec{UsersSecretRef: &oauthv1alpha1.SecretKeyReference{Name: "auth-users"}},
			ClientNamespaces:     &oauthv1alpha1.NamespacePolicy{Selector: nsSel},
			FirstPartyNamespaces: &oauthv1alpha1.NamespacePolicy{Selector: nsSel},
			Tokens:               oauthv1alpha1.TokenSettings{RefreshGracePeriod: grace.String()},
			Upgrade:              up}}
	smallPods(e.ts)
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
			Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-users"},
			StringData: map[string]string{"users": lines}},
		e.ts,
	} {
		if err := suite.c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	e.waitTS(t, 4*time.Minute, "Ready", func(ts *oauthv1alpha1.TokenServer) error {
		if !meta.IsStatusConditionTrue(ts.Status.Conditions, oauthv1alpha1.ConditionReady) ||
			ts.Status.CurrentImage != imageV1 {
			return fmt.Errorf("not Ready on %s yet: %+v", imageV1, ts.Status.Conditions)
		}
		return nil
	})
	redirect := "http://127.0.0.1:9/callback"
	code := []oauthv1alpha1.GrantType{oauthv1alpha1.GrantAuthorizationCode, "refresh_token"}
	userScopes := []oauthv1alpha1.Scope{"openid", "offline_access"}
	cc := []oauthv1alpha1.GrantType{oauthv1alpha1.GrantClientCredentials}
	e.cfg = loadgen.Config{
		URLs:          []string{e.issuer},
		Machine:       e.client(t, "machine", cc, []oauthv1alpha1.Scope{"zones.read"}, "", false),
		Introspector:  e.client(t, "introspector", cc, []oauthv1alpha1.Scope{"zones.read"}, "", false),
		ChainClient:   e.client(t, "web", code, userScopes, redirect, true),
		ChainUsers:    []loadgen.User{{Name: "alice", Password: users["alice"]}},
		Chains:        4,
		Grants:        loadgen.ConsentGrants{Client: suite.c, Namespace: ns, OAuthClient: "partner", Poll: 200 * time.Millisecond},
		GrantClient:   e.client(t, "partner", code, userScopes, redirect, false),
		GrantUsers:    []loadgen.User{{Name: "bob", Password: users["bob"]}, {Name: "carol", Password: users["carol"]}},
		GrantInterval: 2 * time.Second,
		Rate:          40, Workers: 8,
		RefreshGracePeriod: grace,
	}
	return e
}

// forwardService forwards a port of 127.0.0.1 to a Service's port 80 as kube-proxy
// would (each connection to a ready endpoint), for the test's life; it returns the
// URL.
func forwardService(t *testing.T, ns, svc string) string {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", localcluster.AdminKubeconfig(suite.dir))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- netsvc.PortForward(ctx, cs, ns, svc, 80, l, logr.Discard()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + l.Addr().String()
}

func (e *upgradeEnv) client(t *testing.T, name string, grants []oauthv1alpha1.GrantType, scopes []oauthv1alpha1.Scope,
	redirect string, skipConsent bool) loadgen.Client {
	t.Helper()
	oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name},
		Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth"}, ClientName: name,
			GrantTypes: grants, Scopes: scopes, SkipConsent: skipConsent}}
	if redirect != "" {
		oc.Spec.RedirectURIs = []oauthv1alpha1.URL{oauthv1alpha1.URL(redirect)}
	}
	if err := suite.c.Create(t.Context(), oc); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "OAuthClient "+name+" Ready", func() error {
		if err := suite.c.Get(t.Context(), client.ObjectKeyFromObject(oc), oc); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(oc.Status.Conditions, oauthv1alpha1.ConditionReady) || oc.Status.SecretName == "" {
			return fmt.Errorf("conditions %+v", oc.Status.Conditions)
		}
		return nil
	})
	var sec corev1.Secret
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: e.ns, Name: oc.Status.SecretName}, &sec); err != nil {
		t.Fatal(err)
	}
	scope := make([]string, 0, len(scopes))
	for _, s := range scopes {
		scope = append(scope, string(s))
	}
	return loadgen.Client{ID: string(sec.Data["client_id"]), Secret: string(sec.Data["client_secret"]),
		Scope: strings.Join(scope, " "), RedirectURI: redirect}
}

// waitTS polls the TokenServer until ok accepts it.
func (e *upgradeEnv) waitTS(t *testing.T, timeout time.Duration, what string, ok func(*oauthv1alpha1.TokenServer) error) {
	t.Helper()
	eventually(t, timeout, e.ns+": "+what, func() error {
		if err := suite.c.Get(t.Context(), client.ObjectKeyFromObject(e.ts), e.ts); err != nil {
			return err
		}
		return ok(e.ts)
	})
}

// setImage changes spec.image, as `kubectl patch` would.
func (e *upgradeEnv) setImage(t *testing.T, image string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"image":%q}}`, image)
	if _, err := kubectl(t.Context(), "-n", e.ns, "patch", "tokenserver", "auth", "--type", "merge", "-p", patch); err != nil {
		t.Fatal(err)
	}
}

// phases follows status.upgrade of the TokenServer until the upgrade to image ends
// in one of the phases end, calling at (once) with each phase it sees first; it
// returns the phases in the order seen.
type phaseWatch struct {
	seen []oauthv1alpha1.UpgradePhase
	// at is called once per phase, when it is first seen.
	at func(p oauthv1alpha1.UpgradePhase, ts *oauthv1alpha1.TokenServer)
	// each, when set, is called with every status of the upgrade the watch sees.
	each func(ts *oauthv1alpha1.TokenServer)
	// next, when set, ends the watch at the first status of an upgrade to this
	// other image: the operator may write the end of one upgrade and the start of
	// the next in one go.
	next string
}

func (e *upgradeEnv) follow(t *testing.T, timeout time.Duration, toImage string, w *phaseWatch,
	end ...oauthv1alpha1.UpgradePhase) {
	t.Helper()
	// A watch, not a poll: it sees every status the operator writes, also a phase
	// that lasts a moment (Contracting), and a test acts on it at once.
	wc, err := client.NewWithWatch(suite.cfg, client.Options{Scheme: suite.c.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(t.Context(), deadline)
		wi, err := wc.Watch(ctx, &oauthv1alpha1.TokenServerList{}, client.InNamespace(e.ns))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		for ev := range wi.ResultChan() {
			ts, ok := ev.Object.(*oauthv1alpha1.TokenServer)
			if !ok || ts.Name != e.ts.Name {
				continue
			}
			e.ts = ts
			u := ts.Status.Upgrade
			if u != nil && w.next != "" && u.ToImage == w.next {
				t.Logf("%s: an upgrade to %s: %s", time.Now().Format("15:04:05.0"), u.ToImage, u.Phase)
				wi.Stop()
				cancel()
				return
			}
			if u == nil || u.ToImage != toImage {
				continue
			}
			if w.each != nil {
				w.each(ts)
			}
			if len(w.seen) == 0 || w.seen[len(w.seen)-1] != u.Phase {
				w.seen = append(w.seen, u.Phase)
				t.Logf("%s: %s %s %s", time.Now().Format("15:04:05.0"), u.Phase, u.Progress, u.Message)
				if w.at != nil {
					w.at(u.Phase, ts)
				}
			}
			if slices.Contains(end, u.Phase) {
				wi.Stop()
				cancel()
				return
			}
		}
		cancel() // the watch ended (the server closes them now and then): watch again
	}
	t.Fatalf("%s: the upgrade to %s did not end in %v within %s; phases seen %v", e.ns, toImage, end, timeout, w.seen)
}

var ended = []oauthv1alpha1.UpgradePhase{oauthv1alpha1.UpgradeCompleted, oauthv1alpha1.UpgradeRolledBack,
	oauthv1alpha1.UpgradeRefused, oauthv1alpha1.UpgradeFailed}

// startLoad starts the ledger load and waits for its first answers.
func (e *upgradeEnv) startLoad(t *testing.T) *loadgen.Generator {
	t.Helper()
	g, err := loadgen.New(t.Context(), e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	eventually(t, 30*time.Second, "the load's first answers", func() error {
		if n := g.Seen(func(r loadgen.Request) bool { return r.Status == 200 }); n < 20 {
			return fmt.Errorf("%d answered", n)
		}
		return nil
	})
	return g
}

// checkLoad stops the load and checks its ledger; it returns the report.
func checkLoad(t *testing.T, g *loadgen.Generator, cutovers ...loadgen.Cutover) *loadgen.Report {
	t.Helper()
	g.Stop()
	rep, err := g.Check(t.Context(), cutovers...)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	return rep
}

func mustBeZero(t *testing.T, rep *loadgen.Report) {
	t.Helper()
	if f := rep.Failures(); len(f) > 0 {
		t.Errorf("the ledger's must-be-zero figures: %v", f)
	}
}

// A Shared upgrade under load: every phase in order, all traffic on v2 at the end,
// v2's own table written, and the ledger all zeros.
func testSharedUpgrade(t *testing.T) {
	e := newUpgradeEnv(t, "up-shared", fastUpgrade())
	g := e.startLoad(t)
	e.setImage(t, imageV2)
	w := &phaseWatch{at: func(p oauthv1alpha1.UpgradePhase, _ *oauthv1alpha1.TokenServer) {
		if p == oauthv1alpha1.UpgradePromoting {
			g.Mark("promotion started")
		}
	}}
	e.follow(t, 5*time.Minute, imageV2, w, ended...)
	rep := checkLoad(t, g, loadgen.Cutover{Mark: "promotion started", Version: versionV2})
	mustBeZero(t, rep)
	want := []oauthv1alpha1.UpgradePhase{"Planning", "Migrating", "Deploying", "Verifying", "Promoting", "ScalingDown",
		"RollbackWindow", "Contracting", "Completed"}
	if !slices.Equal(w.seen, want) {
		t.Errorf("phases %v; want %v", w.seen, want)
	}
	if e.ts.Status.CurrentImage != imageV2 || e.ts.Status.ActiveColor != "green" {
		t.Errorf("after the upgrade: currentImage %q, activeColor %q; want %s on green", e.ts.Status.CurrentImage,
			e.ts.Status.ActiveColor, imageV2)
	}
	for _, c := range rep.Cutovers {
		if !c.Reached || c.Err != "" {
			t.Errorf("cutover %+v: v2 never served alone", c)
		}
	}
	if rep.Versions[versionV2] == 0 {
		t.Errorf("no answer from %s: %v", versionV2, rep.Versions)
	}
	if n := v2Rows(t, e); n == 0 {
		t.Error("token_issue_log is empty: v2 issued no token")
	} else {
		t.Logf("token_issue_log: %d rows by v2", n)
	}
}

// fastUpgrade is an upgrade with the short timings of a test.
func fastUpgrade() oauthv1alpha1.UpgradeSettings {
	min := int32(10)
	return oauthv1alpha1.UpgradeSettings{
		Analysis:         oauthv1alpha1.UpgradeAnalysis{Interval: "2s", MinRequestsPerStep: &min, FailureThreshold: 2},
		ProgressDeadline: "2m", ScaleDownDelay: "3s", RollbackWindow: "5s",
	}
}

// v2Rows counts the rows of v2's own table, through the bundled database's pod.
func v2Rows(t *testing.T, e *upgradeEnv) int {
	t.Helper()
	var sec corev1.Secret
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: e.ns, Name: "auth-db"}, &sec); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: e.ns, Name: "auth-db-0"}, &pod); err != nil {
		t.Fatal(err)
	}
	dsn := strings.Replace(string(sec.Data["dsn"]), "auth-db."+e.ns+".svc", pod.Status.PodIP, 1)
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM token_issue_log WHERE version = $1`, versionV2).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// deleteOperator deletes the operator's pod, as a node failure or an eviction
// would; its Deployment makes a new one.
func deleteOperator(t *testing.T) {
	t.Helper()
	out, err := kubectl(context.Background(), "-n", "kubeoauth-system", "delete", "pod", "-l",
		"app.kubernetes.io/component=manager", "--wait=false")
	if err != nil || !strings.Contains(out, "deleted") {
		t.Errorf("deleting the operator's pod: %v %s", err, out)
	}
}

func waitOperator(t *testing.T) {
	t.Helper()
	if _, err := kubectl(t.Context(), "-n", "kubeoauth-system", "rollout", "status", "deployment/kubeoauth-manager",
		"--timeout=120s"); err != nil {
		t.Fatal(err)
	}
}

// The operator's pod is deleted as soon as the upgrade enters Deploying, Promoting
// and Contracting: each time a new one resumes from status.upgrade and what it
// observes, and the upgrade completes with the ledger all zeros.
func testUpgradeOperatorDeleted(t *testing.T) {
	e := newUpgradeEnv(t, "up-restart", fastUpgrade())
	g := e.startLoad(t)
	e.setImage(t, imageV2)
	var deletedIn []oauthv1alpha1.UpgradePhase
	w := &phaseWatch{at: func(p oauthv1alpha1.UpgradePhase, _ *oauthv1alpha1.TokenServer) {
		switch p {
		case oauthv1alpha1.UpgradePromoting:
			g.Mark("promotion started")
			fallthrough
		case oauthv1alpha1.UpgradeDeploying, oauthv1alpha1.UpgradeContracting:
			deleteOperator(t)
			deletedIn = append(deletedIn, p)
		}
	}}
	e.follow(t, 5*time.Minute, imageV2, w, ended...)
	waitOperator(t)
	rep := checkLoad(t, g, loadgen.Cutover{Mark: "promotion started", Version: versionV2})
	mustBeZero(t, rep)
	if w.seen[len(w.seen)-1] != oauthv1alpha1.UpgradeCompleted || len(deletedIn) != 3 {
		t.Errorf("phases %v, operator deleted in %v; want Completed after deletions in Deploying, Promoting, Contracting",
			w.seen, deletedIn)
	}
	if e.ts.Status.CurrentImage != imageV2 {
		t.Errorf("currentImage %q, want %s", e.ts.Status.CurrentImage, imageV2)
	}
}

// condition returns the TokenServer's condition of type typ ("" fields if none).
func condition(ts *oauthv1alpha1.TokenServer, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(ts.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// rolledBack checks what a rolled-back upgrade leaves: the old image serving and
// Ready, the reason, Degraded with degradedReason, and the failed image recorded
// (or not).
func rolledBack(t *testing.T, e *upgradeEnv, seen []oauthv1alpha1.UpgradePhase, reason, degradedReason, failedImage string) {
	t.Helper()
	if seen[len(seen)-1] != oauthv1alpha1.UpgradeRolledBack {
		t.Errorf("phases %v; want RolledBack at the end", seen)
	}
	// The conditions follow status.upgrade in the operator's next write (intent
	// first, then the rest).
	e.waitTS(t, 30*time.Second, "the rolled-back state", func(ts *oauthv1alpha1.TokenServer) error {
		u := ts.Status.Upgrade
		if u.Reason != reason {
			return fmt.Errorf("reason %q; want %s", u.Reason, reason)
		}
		if ts.Status.CurrentImage != imageV1 || ts.Status.ActiveColor != "blue" {
			return fmt.Errorf("currentImage %q on %q; want %s on blue", ts.Status.CurrentImage, ts.Status.ActiveColor, imageV1)
		}
		if c := condition(ts, oauthv1alpha1.ConditionReady); c.Status != metav1.ConditionTrue {
			return fmt.Errorf("ready %+v", c)
		}
		d := condition(ts, oauthv1alpha1.ConditionDegraded)
		if degradedReason == "" && d.Status == metav1.ConditionTrue || degradedReason != "" &&
			(d.Status != metav1.ConditionTrue || d.Reason != degradedReason) {
			return fmt.Errorf("degraded %s %s %q; want reason %q", d.Status, d.Reason, d.Message, degradedReason)
		}
		if ts.Status.FailedImage != failedImage {
			return fmt.Errorf("failedImage %q, want %q", ts.Status.FailedImage, failedImage)
		}
		return nil
	})
	d := condition(e.ts, oauthv1alpha1.ConditionDegraded)
	t.Logf("rolled back: %s: %s; Degraded %s %s", e.ts.Status.Upgrade.Reason, e.ts.Status.Upgrade.RollbackReason, d.Status, d.Reason)
}

// A green that crash-loops never becomes ready: at progressDeadline the upgrade
// rolls back, blue having served throughout (all zeros).
func testUpgradeCrashLoop(t *testing.T) {
	up := fastUpgrade()
	up.ProgressDeadline = "20s"
	e := newUpgradeEnv(t, "up-crashloop", up)
	g := e.startLoad(t)
	e.setImage(t, imageCrashloop)
	w := &phaseWatch{}
	e.follow(t, 3*time.Minute, imageCrashloop, w, ended...)
	rep := checkLoad(t, g)
	mustBeZero(t, rep)
	rolledBack(t, e, w.seen, "ProgressDeadlineExceeded", oauthv1alpha1.ReasonUpgradeRolledBack, imageCrashloop)
	if !slices.Contains(w.seen, oauthv1alpha1.UpgradeDeploying) || slices.Contains(w.seen, oauthv1alpha1.UpgradePromoting) {
		t.Errorf("phases %v: want Deploying, never Promoting", w.seen)
	}
}

// A green answering 500 to half its token requests (verification off, so that the
// analysis is what catches it): the analysis fails it at failureThreshold and the
// upgrade rolls back. Its 5xx are what the analysis lets through — all from the
// errors build, all between the promotion's start and the rollback — and nothing
// else fails.
func testUpgradeErrors(t *testing.T) {
	up := fastUpgrade()
	up.Verify = ptr.To(false)
	e := newUpgradeEnv(t, "up-errors", up)
	g := e.startLoad(t)
	e.setImage(t, imageErrors)
	var rolledBackAt time.Time
	w := &phaseWatch{at: func(p oauthv1alpha1.UpgradePhase, _ *oauthv1alpha1.TokenServer) {
		switch p {
		case oauthv1alpha1.UpgradePromoting:
			g.Mark("promotion started")
		case oauthv1alpha1.UpgradeRolledBack:
			rolledBackAt = time.Now()
		}
	}}
	e.follow(t, 3*time.Minute, imageErrors, w, ended...)
	rep := checkLoad(t, g)
	rolledBack(t, e, w.seen, "AnalysisFailed", oauthv1alpha1.ReasonUpgradeRolledBack, imageErrors)
	if rep.TransportErrors+rep.Unexpected+rep.LostTokens+rep.BrokenChains+rep.RevocationsLost+rep.InactiveDuringRun+
		rep.SupersededActive != 0 {
		t.Errorf("besides the 5xx, the ledger must be all zeros: %v", rep.Failures())
	}
	mark := rep.Marks["promotion started"]
	outside := g.Seen(func(r loadgen.Request) bool {
		return r.Status >= 500 && (r.Version != "dev-errors" || r.Start.Before(mark) || r.End.After(rolledBackAt))
	})
	if outside != 0 || rep.ServerErrors == 0 {
		t.Errorf("%d 5xx, %d of them not from the errors build during its promotion", rep.ServerErrors, outside)
	}
	t.Logf("5xx within the analysis bound: %d, between %s and %s (%.1fs)", rep.ServerErrors, mark.Format("15:04:05.0"),
		rolledBackAt.Format("15:04:05.0"), rolledBackAt.Sub(mark).Seconds())
}

// An expand migration that fails: the upgrade stops before anything serves the new
// image; blue is untouched (its pods and StatefulSet as they were) and serves.
func testUpgradeBadExpand(t *testing.T) {
	e := newUpgradeEnv(t, "up-badexpand", fastUpgrade())
	var before corev1.PodList
	if err := suite.c.List(t.Context(), &before, client.InNamespace(e.ns), client.MatchingLabels{"app.kubernetes.io/component": "tokenserver"}); err != nil {
		t.Fatal(err)
	}
	g := e.startLoad(t)
	e.setImage(t, imageBadExpand)
	w := &phaseWatch{}
	e.follow(t, 3*time.Minute, imageBadExpand, w, ended...)
	rep := checkLoad(t, g)
	mustBeZero(t, rep)
	rolledBack(t, e, w.seen, oauthv1alpha1.ReasonMigrationFailed, oauthv1alpha1.ReasonMigrationFailed, imageBadExpand)
	if slices.Contains(w.seen, oauthv1alpha1.UpgradeDeploying) {
		t.Errorf("phases %v: the new image was deployed", w.seen)
	}
	var after corev1.PodList
	if err := suite.c.List(t.Context(), &after, client.InNamespace(e.ns), client.MatchingLabels{"app.kubernetes.io/component": "tokenserver"}); err != nil {
		t.Fatal(err)
	}
	uids := func(l corev1.PodList) (out []string) {
		for _, p := range l.Items {
			out = append(out, p.Name+"/"+string(p.UID)+"/"+p.Spec.Containers[0].Image)
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(uids(before), uids(after)) || len(before.Items) != 2 {
		t.Errorf("the token server's pods before %v, after %v: blue must be untouched", uids(before), uids(after))
	}
}

// The image changed to a third one while the first upgrade deploys: that upgrade
// rolls back first (ImageChanged, not a failure), then an upgrade to the third
// starts; set back to the old image while it promotes (v3 answering part of the
// load), it rolls back (ImageReverted, not a failure either). Blue serves at the end, all zeros, nothing Degraded.
func testUpgradeRetarget(t *testing.T) {
	e := newUpgradeEnv(t, "up-retarget", fastUpgrade())
	g := e.startLoad(t)
	e.setImage(t, imageV2)
	first := &phaseWatch{next: imageV3, at: func(p oauthv1alpha1.UpgradePhase, _ *oauthv1alpha1.TokenServer) {
		if p == oauthv1alpha1.UpgradeDeploying {
			e.setImage(t, imageV3)
		}
	}}
	e.follow(t, 3*time.Minute, imageV2, first, ended...)
	if !slices.Contains(first.seen, oauthv1alpha1.UpgradeRollingBack) {
		t.Errorf("the upgrade to v2: phases %v; want it rolled back before the upgrade to v3", first.seen)
	}
	second := &phaseWatch{at: func(p oauthv1alpha1.UpgradePhase, _ *oauthv1alpha1.TokenServer) {
		if p == oauthv1alpha1.UpgradePromoting {
			// Set back once v3 takes part of the traffic: the rollback must move it back.
			eventually(t, 30*time.Second, "v3 serving part of the load", func() error {
				if n := g.Seen(func(r loadgen.Request) bool { return r.Version == versionV3 }); n < 10 {
					return fmt.Errorf("%d answers from v3", n)
				}
				return nil
			})
			e.setImage(t, imageV1)
		}
	}}
	e.follow(t, 3*time.Minute, imageV3, second, ended...)
	rep := checkLoad(t, g)
	mustBeZero(t, rep)
	rolledBack(t, e, second.seen, "ImageReverted", "", "")
	if !slices.Contains(second.seen, oauthv1alpha1.UpgradePromoting) {
		t.Errorf("the upgrade to v3: phases %v; want it set back while Promoting", second.seen)
	}
}
