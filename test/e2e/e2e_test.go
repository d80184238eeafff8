//go:build e2e

package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	_ "github.com/lib/pq" // the bundled database, reached at its pod's address
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/testing/headless"
)

const appsNS, platformNS = "apps", "platform"

// The scenarios run in order on one cluster; each leaves it as the next expects.
func TestEndToEnd(t *testing.T) {
	for _, s := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"DemoInstallsByHelmAndRevokes", testDemo},
		{"ClientCredentialsWithOAuth2ThroughTheService", testClientCredentials},
		{"BrowserConsentBecomesAConsentGrant", testBrowserConsent},
		{"OperatorPodDeletedMidWorkLosesNothing", testOperatorRestart},
		{"TokenServerPodKilledRequestsKeepSucceeding", testTokenServerPodKilled},
		{"KubectlLogs", testLogs},
		{"PlainPodAsAKubeletWould", testPlainPod},
		{"SecurityContextsAsAKubeletWould", testSecurityContexts},
		{"GracePeriodThenSIGKILL", testGracePeriod},
		{"NodeRestartReadoptsPods", testNodeRestart},
		{"RelyingParties", testRelyingParties},
		{"PagesFromAConfigMap", testBrandedPages},
		{"Upgrades", testUpgrades},
		{"UpstreamOIDCSignInThroughAProviderPod", testUpstreamOIDC},
		{"PodsRefusedByAQuotaStallThenRecover", testQuotaRefusesPods},
		{"HelmUninstallLeavesOnlyWhatIsDocumented", testUninstall},
		{"ChartUpgradeFromThePreviousVersion", testChartUpgrade}, // it starts from the uninstalled cluster
		{"HelmUninstallWithCRDsKeepLeavesTheResources", testUninstallKeep},
		{"HelmUninstallWithoutCRDsKeepDeletesThemByItsHook", testUninstallDelete}, // last: it deletes the CRDs
	} {
		if !t.Run(s.name, s.run) {
			return // later scenarios build on earlier ones
		}
	}
}

// The demo (the README's first command) ran on this cluster: the operator installed
// by Helm runs as a pod, the TokenServer with its bundled database came Ready, a
// client_credentials token was issued and introspected, and deleting the ConsentGrant
// made alice's token inactive.
func testDemo(t *testing.T) {
	for _, want := range []string{
		`STATUS: deployed`,
		`tokenserver.oauth.kubeoauth.io/auth condition met`,
		`pod/auth-db-0\s+1/1\s+Running`,
		`job.batch/auth-migrate-\w+\s+Complete`,
		`"active":true,"client_id":"apps-reports-\w+"`,
		`"issuer":"http://127.0.0.1:4444"`,
		`"active":true,"client_id":"apps-webapp-\w+".*"sub":"alice"`,
		`consentgrant.oauth.kubeoauth.io "webapp-alice" deleted`,
		`\{"active":false\}`,
		`make demo-down`,
	} {
		if !regexp.MustCompile(want).MatchString(suite.demoOutput) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	var dep appsv1.Deployment
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: "kubeoauth-system", Name: "kubeoauth-manager"}, &dep); err != nil {
		t.Fatal(err)
	}
	if dep.Labels["app.kubernetes.io/managed-by"] != "Helm" || dep.Status.ReadyReplicas != 1 {
		t.Errorf("operator Deployment: labels %v, %d ready", dep.Labels, dep.Status.ReadyReplicas)
	}
	if t.Failed() {
		t.Log(suite.demoOutput)
	}
}

func clientSecret(t *testing.T, name string) (id, secret string) {
	t.Helper()
	var s corev1.Secret
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: appsNS, Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	return string(s.Data["client_id"]), string(s.Data["client_secret"])
}

// introspect asks the token server, as the reports client, whether tok is active.
func introspect(t *testing.T, tok string) bool {
	t.Helper()
	id, secret := clientSecret(t, "reports-oauth")
	return introspectAt(t, suite.issuer, clientcredentials.Config{ClientID: id, ClientSecret: secret}, tok)
}

// An app uses the Secret the operator wrote with golang.org/x/oauth2, through the
// token server's Service (the port-forward follows its ready endpoints).
func testClientCredentials(t *testing.T) {
	id, secret := clientSecret(t, "reports-oauth")
	var s corev1.Secret
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: appsNS, Name: "reports-oauth"}, &s); err != nil {
		t.Fatal(err)
	}
	cc := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: string(s.Data["token_url"]),
		Scopes: []string{"reports.read"}}
	if string(s.Data["token_url"]) != suite.issuer+"/oauth2/token" || string(s.Data["issuer"]) != suite.issuer {
		t.Errorf("the Secret's token_url %q and issuer %q", s.Data["token_url"], s.Data["issuer"])
	}
	tok, err := cc.Token(t.Context())
	if err != nil {
		t.Fatalf("client_credentials with the operator's Secret: %v", err)
	}
	if !introspect(t, tok.AccessToken) {
		t.Error("the new token is not active")
	}
	bad := cc
	bad.ClientSecret = "not-the-secret-" + secret[:8]
	if _, err := bad.Token(t.Context()); err == nil {
		t.Error("a wrong client secret got a token")
	}
}

// appCallback is an app's redirect URI on the host: it answers the browser with a
// page titled title whose #result marks the flow as done, and keeps the query of
// the last callback for query. The browser also asks for /favicon.ico: 404.
func appCallback(t *testing.T, title string) (callbackURL string, query func() url.Values) {
	t.Helper()
	var mu sync.Mutex
	got := url.Values{}
	rp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		got = r.URL.Query()
		mu.Unlock()
		_, _ = w.Write([]byte(`<!doctype html><title>` + title + `</title><p id="result">done</p>`))
	}))
	t.Cleanup(rp.Close)
	return rp.URL + "/callback", func() url.Values {
		mu.Lock()
		defer mu.Unlock()
		return got
	}
}

// A consent given in a real browser (headless Chromium) shows up as a mirrored
// ConsentGrant in the client's namespace within seconds; deleting that resource
// revokes the tokens issued under it.
func testBrowserConsent(t *testing.T) {
	ctx := t.Context()
	callback, query := appCallback(t, "Notes")
	oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: appsNS, Name: "notes"},
		Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth", Namespace: platformNS},
			ClientName: "Notes", GrantTypes: []oauthv1alpha1.GrantType{oauthv1alpha1.GrantAuthorizationCode},
			RedirectURIs: []oauthv1alpha1.URL{oauthv1alpha1.URL(callback)}, Scopes: []oauthv1alpha1.Scope{"openid", "profile"}}}
	if err := suite.c.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitReady(t, oc)
	id, secret := clientSecret(t, "notes-oauth")
	cfg := oauth2.Config{ClientID: id, ClientSecret: secret, RedirectURL: callback, Scopes: []string{"openid", "profile"},
		Endpoint: oauth2.Endpoint{AuthURL: suite.issuer + "/oauth2/auth", TokenURL: suite.issuer + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader}}
	password, err := os.ReadFile(filepath.Join(suite.dir, "demo-alice-password"))
	if err != nil {
		t.Fatal(err)
	}
	verifier := oauth2.GenerateVerifier()
	bctx := headless.Chromium(t)
	var appName string
	if err := chromedp.Run(bctx,
		chromedp.Navigate(cfg.AuthCodeURL("state-notes-0001", oauth2.S256ChallengeOption(verifier))),
		chromedp.WaitVisible("#username", chromedp.ByID),
		chromedp.SendKeys("#username", "alice", chromedp.ByID),
		chromedp.SendKeys("#password", string(password), chromedp.ByID),
		chromedp.Click("#sign-in", chromedp.ByID),
		chromedp.WaitVisible("#approve", chromedp.ByID),
		chromedp.Text("#app-name", &appName, chromedp.ByID),
		chromedp.Click("#approve", chromedp.ByID),
		chromedp.WaitVisible("#result", chromedp.ByID),
	); err != nil {
		t.Fatalf("consent in the browser: %v", err)
	}
	consented := time.Now()
	if appName != "Notes" {
		t.Errorf("the consent page names the app %q", appName)
	}
	code := query().Get("code")
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the browser's code: %v", err)
	}

	var mirrored oauthv1alpha1.ConsentGrant
	eventually(t, 15*time.Second, "the browser consent mirrored as a ConsentGrant", func() error {
		var list oauthv1alpha1.ConsentGrantList
		if err := suite.c.List(ctx, &list, client.InNamespace(appsNS),
			client.MatchingLabels{oauthv1alpha1.LabelSource: oauthv1alpha1.SourceMirrored}); err != nil {
			return err
		}
		for _, cg := range list.Items {
			if cg.Spec.ClientRef.Name == "notes" && cg.Spec.Subject == "alice" {
				mirrored = cg
				return nil
			}
		}
		return fmt.Errorf("%d mirrored grants, none for notes/alice", len(list.Items))
	})
	t.Logf("mirrored as ConsentGrant %s %.1fs after the consent", mirrored.Name, time.Since(consented).Seconds())
	// The operator follows the event log with long polls that end on time, not in
	// errors that start the follower over.
	if out, err := kubectl(ctx, "-n", "kubeoauth-system", "logs", "deploy/kubeoauth-manager"); err != nil {
		t.Fatal(err)
	} else if strings.Contains(out, "following the event log failed") {
		t.Errorf("the operator's mirror keeps failing:\n%s", out)
	}
	if !introspect(t, tok.AccessToken) {
		t.Fatal("the token is not active before the grant is deleted")
	}
	if _, err := kubectl(ctx, "-n", appsNS, "delete", "consentgrant", mirrored.Name); err != nil {
		t.Fatal(err)
	}
	if introspect(t, tok.AccessToken) {
		t.Error("the token is still active after its ConsentGrant was deleted with kubectl")
	}
}

func waitReady(t *testing.T, oc *oauthv1alpha1.OAuthClient) {
	t.Helper()
	eventually(t, 60*time.Second, "OAuthClient "+oc.Name+" Ready", func() error {
		var cur oauthv1alpha1.OAuthClient
		if err := suite.c.Get(t.Context(), client.ObjectKeyFromObject(oc), &cur); err != nil {
			return err
		}
		for _, c := range cur.Status.Conditions {
			if c.Type == "Ready" && c.Status == metav1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", cur.Status.Conditions)
	})
}

// The operator's pod is deleted while it works through new clients: the Deployment
// brings a new one, which finishes the work; every client works.
func testOperatorRestart(t *testing.T) {
	ctx := t.Context()
	clients := make([]*oauthv1alpha1.OAuthClient, 0, 10)
	for i := range 10 {
		oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: appsNS, Name: "batch-" + strconv.Itoa(i)},
			Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth", Namespace: platformNS},
				ClientName: "Batch " + strconv.Itoa(i), GrantTypes: []oauthv1alpha1.GrantType{oauthv1alpha1.GrantClientCredentials},
				Scopes: []oauthv1alpha1.Scope{"reports.read"}}}
		if err := suite.c.Create(ctx, oc); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, oc)
	}
	if _, err := kubectl(ctx, "-n", "kubeoauth-system", "delete", "pod", "-l", "app.kubernetes.io/component=manager", "--wait=false"); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectl(ctx, "-n", "kubeoauth-system", "rollout", "status", "deployment/kubeoauth-manager", "--timeout=120s"); err != nil {
		t.Fatal(err)
	}
	for _, oc := range clients {
		waitReady(t, oc)
		id, secret := clientSecret(t, oc.Name+"-oauth")
		cc := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: suite.issuer + "/oauth2/token"}
		if _, err := cc.Token(ctx); err != nil {
			t.Errorf("client %s after the operator restart: %v", oc.Name, err)
		}
	}
}

// load requests client_credentials tokens one after another, each on a new
// connection through the Service, until stopped; it counts successes and failures.
type load struct {
	ok, failed atomic.Int64
	lastErr    atomic.Value
	stop       chan struct{}
	done       chan struct{}
}

func startLoad(t *testing.T) *load {
	id, secret := clientSecret(t, "reports-oauth")
	cc := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: suite.issuer + "/oauth2/token"}
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, httpc)
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := cc.Token(ctx); err != nil {
				l.failed.Add(1)
				l.lastErr.Store(err.Error())
			} else {
				l.ok.Add(1)
			}
		}
	}()
	return l
}

func (l *load) finish() (ok, failed int64, lastErr string) {
	close(l.stop)
	<-l.done
	e, _ := l.lastErr.Load().(string)
	return l.ok.Load(), l.failed.Load(), e
}

// A token-server process is killed (SIGKILL): the node restarts it, the other
// replica serves meanwhile. Then a pod is deleted: the StatefulSet replaces it. Token
// requests run throughout.
func testTokenServerPodKilled(t *testing.T) {
	ctx := t.Context()
	l := startLoad(t)
	time.Sleep(time.Second)

	pid := containerPid(t, "auth-blue-0")
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing auth-blue-0's process (pid %d): %v", pid, err)
	}
	eventually(t, 60*time.Second, "auth-blue-0 restarted and Ready", func() error {
		var p corev1.Pod
		if err := suite.c.Get(ctx, client.ObjectKey{Namespace: platformNS, Name: "auth-blue-0"}, &p); err != nil {
			return err
		}
		if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].RestartCount < 1 || !p.Status.ContainerStatuses[0].Ready {
			return fmt.Errorf("container statuses %+v", p.Status.ContainerStatuses)
		}
		return nil
	})
	okKill, failedKill, errKill := l.finish()

	l = startLoad(t)
	time.Sleep(time.Second)
	var old corev1.Pod
	if err := suite.c.Get(ctx, client.ObjectKey{Namespace: platformNS, Name: "auth-blue-1"}, &old); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectl(ctx, "-n", platformNS, "delete", "pod", "auth-blue-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the StatefulSet replaced auth-blue-1", func() error {
		var p corev1.Pod
		if err := suite.c.Get(ctx, client.ObjectKey{Namespace: platformNS, Name: "auth-blue-1"}, &p); err != nil {
			return err
		}
		if p.UID == old.UID || len(p.Status.ContainerStatuses) == 0 || !p.Status.ContainerStatuses[0].Ready {
			return errors.New("not replaced and Ready yet")
		}
		return nil
	})
	time.Sleep(time.Second)
	okDelete, failedDelete, errDelete := l.finish()

	t.Logf("process killed: %d token requests succeeded, %d failed; pod deleted: %d succeeded, %d failed",
		okKill, failedKill, okDelete, failedDelete)
	// A SIGKILL can only fail the one request in flight on the killed process; every
	// later one goes to the other replica.
	if okKill == 0 || failedKill > 1 {
		t.Errorf("while a token server was killed: %d succeeded, %d failed (last: %s)", okKill, failedKill, errKill)
	}
	// A deleted pod stops gracefully: nothing fails.
	if okDelete == 0 || failedDelete > 0 {
		t.Errorf("while a token-server pod was replaced: %d succeeded, %d failed (last: %s)", okDelete, failedDelete, errDelete)
	}
}

// containerPid is the pid of the pod's container process group, from its
// containerID (process://<pid>).
func containerPid(t *testing.T, pod string) int {
	t.Helper()
	var p corev1.Pod
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: platformNS, Name: pod}, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s has no container status", pod)
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "process://"))
	if err != nil {
		t.Fatalf("container ID %q: %v", p.Status.ContainerStatuses[0].ContainerID, err)
	}
	return pid
}

// kubectl logs reaches the node's API through the API server: the current and the
// previous process of the token server killed above, and -f following new lines.
func testLogs(t *testing.T) {
	ctx := t.Context()
	for _, args := range [][]string{{"auth-blue-0"}, {"auth-blue-0", "--previous"}, {"auth-blue-0", "--tail", "1"}} {
		out, err := kubectl(ctx, append([]string{"-n", platformNS, "logs"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "token server started") && args[len(args)-1] != "1" {
			t.Errorf("kubectl logs %v lacks the start line:\n%s", args, out)
		}
		if args[len(args)-1] == "1" && strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("kubectl logs --tail 1 printed more than a line:\n%s", out)
		}
	}
	// Follow: a failed sign-in to the database, made meanwhile, shows up in the stream.
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(fctx, suite.kubectl, "-n", platformNS, "logs", "-f", "--tail", "0", "auth-db-0") // #nosec G204 -- test
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(suite.dir, "admin.kubeconfig"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	lines := make(chan string, 100)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := stdout.Read(buf)
			if n > 0 {
				lines <- string(buf[:n])
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	time.Sleep(time.Second)
	var db corev1.Pod
	if err := suite.c.Get(ctx, client.ObjectKey{Namespace: platformNS, Name: "auth-db-0"}, &db); err != nil {
		t.Fatal(err)
	}
	conn, err := sql.Open("postgres", "host="+db.Status.PodIP+" user=intruder password=wrong dbname=postgres sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.PingContext(ctx); err == nil {
		t.Error("a wrong password opened the database")
	}
	_ = conn.Close()
	var seen strings.Builder
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("kubectl logs -f ended; it printed:\n%s", seen.String())
			}
			seen.WriteString(l)
			if strings.Contains(seen.String(), `"intruder"`) {
				return
			}
		case <-fctx.Done():
			t.Fatalf("kubectl logs -f showed no failed sign-in within 20s; it printed:\n%s", seen.String())
		}
	}
}

// The node process restarts: its pods' processes are re-adopted, not restarted.
func testNodeRestart(t *testing.T) {
	ctx := t.Context()
	before := containerPid(t, "auth-db-0")
	// A pod that ran to completion (a Job's, say) stays done: a restarted node
	// does not run it again.
	once := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: platformNS, Name: "run-once"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, SecurityContext: restrictedPod(65534, nil),
			Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"/bin/sh", "-c", "echo ran"},
				SecurityContext: restrictedContainer()}}}}
	if err := suite.c.Create(ctx, once); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = suite.c.Delete(context.Background(), once) }()
	var finishedAt metav1.Time
	eventually(t, 30*time.Second, "run-once succeeded", func() error {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(once), once); err != nil {
			return err
		}
		if once.Status.Phase != corev1.PodSucceeded {
			return fmt.Errorf("phase %s", once.Status.Phase)
		}
		finishedAt = once.Status.ContainerStatuses[0].State.Terminated.FinishedAt
		return nil
	})
	nodePid, err := os.ReadFile(filepath.Join(suite.dir, "pids", "node"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(nodePid)))
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for syscall.Kill(pid, 0) == nil {
		time.Sleep(100 * time.Millisecond)
	}
	// Nothing probes the pods while the node is down: it marked them not Ready.
	var db corev1.Pod
	if err := suite.c.Get(ctx, client.ObjectKey{Namespace: platformNS, Name: "auth-db-0"}, &db); err != nil {
		t.Fatal(err)
	}
	for _, c := range db.Status.Conditions {
		if c.Type == corev1.PodReady && (c.Status != corev1.ConditionFalse || c.Reason != "NodeShutdown") {
			t.Errorf("auth-db-0 while the node is stopped: %+v; want Ready False, NodeShutdown", c)
		}
	}
	up := exec.CommandContext(ctx, suite.tool, "up", "--dir", suite.dir, // #nosec G204 -- our tool
		"--assets", os.Getenv("KUBEOAUTH_E2E_ASSETS"))
	up.Dir = suite.repo
	out, err := up.CombinedOutput()
	if err != nil {
		t.Fatalf("localcluster up after the node stopped: %v\n%s", err, out)
	}
	eventually(t, 30*time.Second, "platform pods Ready again", func() error {
		var pods corev1.PodList
		if err := suite.c.List(ctx, &pods, client.InNamespace(platformNS)); err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && (len(p.Status.ContainerStatuses) == 0 || !p.Status.ContainerStatuses[0].Ready) {
				return fmt.Errorf("%s not ready", p.Name)
			}
		}
		return nil
	})
	if after := containerPid(t, "auth-db-0"); after != before {
		t.Errorf("the database process was restarted (pid %d → %d), not re-adopted", before, after)
	}
	if err := suite.c.Get(ctx, client.ObjectKeyFromObject(once), once); err != nil {
		t.Fatal(err)
	}
	if s := once.Status.ContainerStatuses; once.Status.Phase != corev1.PodSucceeded || len(s) != 1 || s[0].RestartCount != 0 ||
		s[0].State.Terminated == nil || !s[0].State.Terminated.FinishedAt.Equal(&finishedAt) {
		t.Errorf("the finished pod ran again after the node restart: phase %s, %+v", once.Status.Phase, s)
	}
	if out, err := kubectl(ctx, "-n", platformNS, "logs", "run-once", "--previous"); err == nil {
		t.Errorf("the finished pod has a previous log, so it ran twice:\n%s", out)
	}
	id, secret := clientSecret(t, "reports-oauth")
	cc := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: suite.issuer + "/oauth2/token"}
	if _, err := cc.Token(ctx); err != nil {
		t.Errorf("a token after the node restart: %v", err)
	}
	// The re-adopted operator still reads its service-account token (its volume was
	// refreshed in place) and registers a new client.
	oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: appsNS, Name: "after-node-restart"},
		Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth", Namespace: platformNS},
			ClientName: "After", GrantTypes: []oauthv1alpha1.GrantType{oauthv1alpha1.GrantClientCredentials}}}
	if err := suite.c.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitReady(t, oc)
	if out, _ := kubectl(ctx, "-n", "kubeoauth-system", "logs", "deploy/kubeoauth-manager", "--since=2m"); strings.Contains(out, "Unable to rotate token") {
		t.Errorf("the operator lost its service-account token when the node restarted:\n%s", out)
	}
}

// Uninstalling as docs/operator.md says — resources first, then the chart — leaves
// only the CRDs (crds.keep, on by default, as in cert-manager's chart) and the bundled database's volume claim (a
// TokenServer's data is never deleted with it).
func testUninstall(t *testing.T) {
	ctx := t.Context()
	for _, kinds := range []string{"consentgrants,oauthclients", "tokenservers"} {
		if _, err := kubectl(ctx, "delete", kinds, "--all", "-A", "--timeout=120s"); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctx, suite.helm, "uninstall", "kubeoauth", "-n", "kubeoauth-system", "--wait") // #nosec G204 -- pinned helm
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(suite.dir, "admin.kubeconfig"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	eventually(t, 60*time.Second, "nothing of kubeoauth left but the CRDs and the database claim", func() error {
		var left []string
		// The claim holds the database (kept on purpose); the users Secret is the
		// user's own, which the demo created.
		kept := map[string]bool{"platform/persistentvolumeclaim/data-auth-db-0": true, "platform/secret/auth-users": true}
		for _, ns := range []string{"kubeoauth-system", platformNS, appsNS} {
			out, err := kubectl(ctx, "-n", ns, "get", "all,secrets,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets,pvc",
				"-o", "name")
			if err != nil {
				return err
			}
			for _, name := range strings.Fields(out) {
				if !kept[ns+"/"+name] && !isDefault(name) {
					left = append(left, ns+"/"+name)
				}
			}
		}
		out, err := kubectl(ctx, "get", "clusterroles,clusterrolebindings", "-o", "name")
		if err != nil {
			return err
		}
		for _, name := range strings.Fields(out) {
			if strings.Contains(name, "kubeoauth-manager") {
				left = append(left, name)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("left behind: %v", left)
		}
		return nil
	})
	if _, err := kubectl(ctx, "get", "crd", "tokenservers.oauth.kubeoauth.io", "oauthclients.oauth.kubeoauth.io",
		"consentgrants.oauth.kubeoauth.io"); err != nil {
		t.Errorf("the CRDs are gone; crds.keep keeps them, as the docs say: %v", err)
	}
}

// isDefault says whether a namespace's object is one Kubernetes itself keeps there.
func isDefault(name string) bool {
	return name == "serviceaccount/default" || name == "configmap/kube-root-ca.crt"
}
