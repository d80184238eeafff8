package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// TestGitOpsStatus: the three kinds, in each state the operator reaches, read as
// GitOps tools read them: kstatus (Flux, kpt; sigs.k8s.io/cli-utils) says Current for
// a Ready object, InProgress while the operator waits or retries, Failed when only a
// person can fix it; the Argo CD health check of docs/argocd-health.md, run by
// gopher-lua as Argo CD runs it, says Healthy, Progressing and Degraded on the same
// objects. Before Reconciling and Stalled, a refused OAuthClient read as done.
func TestGitOpsStatus(t *testing.T) {
	ctx := context.Background()
	health := argoHealthScripts(t)
	check := func(t *testing.T, obj client.Object, want status.Status, argo string) {
		t.Helper()
		checkGitOps(t, health, obj, want, argo)
	}

	t.Run("ready", func(t *testing.T) {
		ns := firstPartyServer(t, "")
		ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"}}
		oc := readyClient(t, ns, "app")
		cg := grant(ns, "app", "alice", "zones.read")
		if err := k8s.Create(ctx, cg); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, cg, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
		for _, obj := range []client.Object{ts, oc, cg} {
			check(t, obj, status.CurrentStatus, "Healthy")
		}
		// The same Ready client as it reads between an edit and the pass over it (the
		// generation moved on, status not yet): not done, for both tools.
		u := asUnstructured(t, oc)
		u.SetGeneration(u.GetGeneration() + 1)
		if res, err := status.Compute(u); err != nil || res.Status != status.InProgressStatus {
			t.Errorf("kstatus of a generation not yet observed: %+v, %v", res, err)
		}
		if hs, msg := runArgoHealth(t, health["OAuthClient"], u); hs != "Progressing" {
			t.Errorf("Argo CD: a generation not yet observed is %s (%s), want Progressing", hs, msg)
		}
	})

	t.Run("waiting", func(t *testing.T) {
		ns := namespace(t, "waiting", nil)
		oc := newClient(ns, "app", "", func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ServerRef.Name = "not-yet" })
		cg := grant(ns, "not-yet", "alice", "zones.read")
		for _, obj := range []client.Object{oc, cg} {
			if err := k8s.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}
		waitCondition(t, oc, oauthv1alpha1.ConditionReconciling, metav1.ConditionTrue, controllers.ReasonServerNotFound)
		waitCondition(t, cg, oauthv1alpha1.ConditionReconciling, metav1.ConditionTrue, controllers.ReasonClientNotFound)
		for _, obj := range []client.Object{oc, cg} {
			check(t, obj, status.InProgressStatus, "Progressing")
		}
	})

	// A token server whose admin API fails is retried with backoff: not done, not
	// given up on.
	t.Run("retrying", func(t *testing.T) {
		ns := namespace(t, "retrying", nil)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "the database is unavailable", http.StatusServiceUnavailable)
		}))
		t.Cleanup(srv.Close)
		if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-admin"},
			StringData: map[string]string{"token": adminToken}}); err != nil {
			t.Fatal(err)
		}
		ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
			Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), External: &oauthv1alpha1.ExternalTokenServer{
				AdminURL: srv.URL, Insecure: true, TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "auth-admin"}}}}
		if err := k8s.Create(ctx, ts); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, ts, oauthv1alpha1.ConditionReconciling, metav1.ConditionTrue, controllers.ReasonAdminUnreachable)
		check(t, ts, status.InProgressStatus, "Progressing")
		waitWarning(t, ns, ts.Name, controllers.ReasonAdminUnreachable)
	})

	t.Run("needs a human", func(t *testing.T) {
		platform := tenancyServer(t)
		// A namespace the TokenServer does not admit: the client is refused.
		outsider := namespace(t, "outsider", nil)
		refused := newClient(outsider, "app", platform, nil)
		// An admitted namespace that is not first-party: its client works, a declared
		// grant (consent nobody gave) is refused.
		tenant := namespace(t, "tenant", map[string]string{labelClients: "allowed"})
		oc := newClient(tenant, "app", platform, nil)
		cg := grant(tenant, "app", "alice", "zones.read")
		for _, obj := range []client.Object{refused, oc, cg} {
			if err := k8s.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}
		waitCondition(t, refused, oauthv1alpha1.ConditionStalled, metav1.ConditionTrue, controllers.ReasonNamespaceNotAllowed)
		waitCondition(t, cg, oauthv1alpha1.ConditionStalled, metav1.ConditionTrue, controllers.ReasonNotFirstParty)
		for _, obj := range []client.Object{refused, cg} {
			check(t, obj, status.FailedStatus, "Degraded")
		}
		waitWarning(t, outsider, "app", controllers.ReasonNamespaceNotAllowed)
		waitWarning(t, tenant, cg.Name, controllers.ReasonNotFirstParty)
	})

	// A bundled token server whose page templates ConfigMap is missing serves with
	// its last good pages, but the spec cannot be met until someone creates it.
	t.Run("token server needs a human", func(t *testing.T) {
		ts, _ := upgradeServer(t, "stalled", func(ts *oauthv1alpha1.TokenServer) {
			ts.Spec.Branding = &oauthv1alpha1.Branding{TemplatesConfigMapRef: &oauthv1alpha1.LocalObjectReference{Name: "auth-templates"}}
		})
		waitCondition(t, ts, oauthv1alpha1.ConditionStalled, metav1.ConditionTrue, controllers.ReasonPageTemplatesMissing)
		check(t, ts, status.FailedStatus, "Degraded")
		waitWarning(t, ts.Namespace, ts.Name, controllers.ReasonPageTemplatesMissing)
	})

	// An upgrade reads as under way up to its promotion; once the new image serves
	// every request the spec is met, though the rollback window keeps Progressing
	// True for an hour: a Flux dependsOn or an Argo CD sync wave must not wait on it.
	t.Run("token server upgrade", func(t *testing.T) {
		step := advanceOperatorClock(t)
		ts, k := upgradeServer(t, "gitops-upgrade", nil)
		toPromotion(t, ts, k)
		check(t, ts, status.InProgressStatus, "Progressing")
		for want := int32(2); want <= 3; want++ {
			k.requests.Add(25)
			step(31 * time.Second)
			poke(t, ts)
			if want == 2 {
				eventually(t, 20*time.Second, "step 2", func() bool {
					_ = k8s.Get(ctx, client.ObjectKeyFromObject(ts), ts)
					return ts.Status.Upgrade.Step == 2 && ts.Status.Upgrade.Progress == "1/2"
				}, func() string { return fmt.Sprintf("upgrade %+v", ts.Status.Upgrade) })
			}
		}
		waitPhase(t, ts, oauthv1alpha1.UpgradeScalingDown)
		check(t, ts, status.CurrentStatus, "Healthy")
		step(31 * time.Second)
		poke(t, ts)
		waitPhase(t, ts, oauthv1alpha1.UpgradeRollbackWindow)
		if ts.Status.CurrentImage != imageV2 {
			t.Errorf("status.currentImage %s in the rollback window, want %s", ts.Status.CurrentImage, imageV2)
		}
		check(t, ts, status.CurrentStatus, "Healthy")
	})

	// A pause before promotion waits for a person: the old image serves, so not done
	// (InProgress, as kstatus reads a paused Deployment mid-rollout), and Suspended
	// for Argo CD, as it reads a paused Argo Rollout.
	t.Run("token server upgrade paused", func(t *testing.T) {
		advanceOperatorClock(t)
		ts, k := upgradeServer(t, "gitops-paused", func(ts *oauthv1alpha1.TokenServer) { ts.Spec.Upgrade.PauseBeforePromotion = true })
		setImage(t, ts, imageV2)
		k.release("plan", jobOutcome{message: planOK})
		k.release("expand", jobOutcome{})
		k.release("verify", jobOutcome{})
		waitPhase(t, ts, oauthv1alpha1.UpgradePaused)
		check(t, ts, status.InProgressStatus, "Suspended")
	})
}

// checkGitOps reads obj from the API server as kstatus and the Argo CD health check
// of docs/argocd-health.md (health, by kind) read it, and wants want and argo.
func checkGitOps(t *testing.T, health map[string]string, obj client.Object, want status.Status, argo string) {
	t.Helper()
	u := asUnstructured(t, obj)
	res, err := status.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != want {
		t.Errorf("kstatus: %s %s is %s (%s), want %s; conditions %+v", u.GetKind(), u.GetName(), res.Status, res.Message, want,
			conditionsOf(obj))
	}
	hs, msg := runArgoHealth(t, health[u.GetKind()], u)
	if hs != argo {
		t.Errorf("Argo CD: %s %s is %s (%s), want %s", u.GetKind(), u.GetName(), hs, msg, argo)
	}
}

// kubectl as a user runs it: `kubectl wait --for=condition=Ready` returns for each of
// the three kinds, and `kubectl get oauth` (a category) lists them.
func TestKubectlWaitAndCategory(t *testing.T) {
	ns := firstPartyServer(t, "")
	readyClient(t, ns, "app")
	cg := grant(ns, "app", "alice", "zones.read")
	if err := k8s.Create(context.Background(), cg); err != nil {
		t.Fatal(err)
	}
	objects := []string{"tokenserver/auth", "oauthclient/app", "consentgrant/" + cg.Name}
	kubectl := func(args ...string) string {
		t.Helper()
		args = append([]string{"--kubeconfig", kubeconfig, "-n", ns}, args...)
		// #nosec G204 -- the test's own kubectl and arguments
		out, err := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	kubectl(append([]string{"wait", "--for=condition=Ready", "--timeout=20s"}, objects...)...)
	// The STATUS column is Ready's reason: what a user reads to know why not.
	for obj, reason := range map[string]string{"tokenserver/auth": controllers.ReasonAdminReachable,
		"oauthclient/app": controllers.ReasonSynced, "consentgrant/" + cg.Name: controllers.ReasonSynced} {
		out := kubectl("get", obj)
		if header, row, _ := strings.Cut(out, "\n"); !strings.Contains(header, "STATUS") || !slices.Contains(strings.Fields(row), reason) {
			t.Errorf("kubectl get %s does not show the STATUS %s:\n%s", obj, reason, out)
		}
	}
	listed := strings.Fields(kubectl("get", "oauth", "-o", "name"))
	for _, obj := range objects {
		want := strings.Replace(obj, "/", "."+oauthv1alpha1.GroupVersion.Group+"/", 1)
		if !slices.Contains(listed, want) {
			t.Errorf("kubectl get oauth: %v, want %s among them", listed, want)
		}
	}
}

// asUnstructured reads obj from the API server as a GitOps tool does: unstructured,
// with its apiVersion and kind.
func asUnstructured(t *testing.T, obj client.Object) *unstructured.Unstructured {
	t.Helper()
	gvk, err := apiutil.GVKForObject(obj, k8s.Scheme())
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), u); err != nil {
		t.Fatal(err)
	}
	return u
}

// argoHealthScripts reads the argocd-cm of docs/argocd-health.md, as a user copies
// it, and returns each kind's health script.
func argoHealthScripts(t *testing.T) map[string]string {
	t.Helper()
	page, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "argocd-health.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(page), "```yaml\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("docs/argocd-health.md has no ```yaml block")
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal([]byte(block), &cm); err != nil {
		t.Fatalf("docs/argocd-health.md: %v", err)
	}
	scripts := map[string]string{}
	for _, kind := range []string{"TokenServer", "OAuthClient", "ConsentGrant"} {
		key := "resource.customizations.health." + oauthv1alpha1.GroupVersion.Group + "_" + kind
		if cm.Data[key] == "" {
			t.Fatalf("docs/argocd-health.md: argocd-cm has no %s", key)
		}
		scripts[kind] = cm.Data[key]
	}
	return scripts
}

// runArgoHealth runs a health script as Argo CD does (util/lua): the object as the
// global obj, converted to Lua tables, and the table the script returns read for
// status and message.
func runArgoHealth(t *testing.T, script string, u *unstructured.Unstructured) (healthStatus, message string) {
	t.Helper()
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable,
		lua.StringLibName: lua.OpenString, lua.MathLibName: lua.OpenMath} {
		l.Push(l.NewFunction(open))
		l.Push(lua.LString(name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", luaValue(l, u.Object))
	if err := l.DoString(script); err != nil {
		t.Fatalf("the health script fails: %v", err)
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("the health script returned %s, not a table", l.Get(-1).Type())
	}
	return lua.LVAsString(ret.RawGetString("status")), lua.LVAsString(ret.RawGetString("message"))
}

// luaValue converts JSON-shaped Go values as Argo CD's decodeValue does.
func luaValue(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for k, item := range v {
			tbl.RawSetString(k, luaValue(l, item))
		}
		return tbl
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(luaValue(l, item))
		}
		return arr
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	}
	return lua.LNil
}
