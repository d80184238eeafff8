//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2/clientcredentials"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// The namespace ChartUpgradeFromThePreviousVersion left its TokenServer auth and its
// OAuthClients before and after in; the two uninstall scenarios below take it over.
const chartNS = "chart-upgrade"

// With crds.keep (the default), `helm uninstall` takes the operator and leaves the
// CRDs and with them every TokenServer, OAuthClient and ConsentGrant, as
// docs/install.md says: no hook runs, the resources and their Secrets stay, and the
// token server, which needs no operator to serve, goes on answering for the tokens
// it issued. It runs after ChartUpgradeFromThePreviousVersion, on its release.
func testUninstallKeep(t *testing.T) {
	ctx := t.Context()
	issuer := forwardService(t, chartNS, "auth")
	before := existingClient(t, chartNS, "before")
	// The Secret's token_url is the issuer's, the port ChartUpgradeFromThePreviousVersion
	// forwarded; this scenario forwards its own.
	before.TokenURL = issuer + "/oauth2/token"
	tok, err := before.Token(ctx)
	if err != nil {
		t.Fatalf("a token before the uninstall: %v", err)
	}

	hook := watchHook(t)
	mustHelm(t, "uninstall", "kubeoauth", "-n", "kubeoauth-system", "--wait", "--timeout", "2m")
	if job, _, _, _ := hook.stop(t); job != nil {
		t.Errorf("crds.keep: a delete-resources hook Job ran (%s)", job.Name)
	}

	for _, name := range crdNames {
		if out := mustKubectl(t, "get", "crd", name, "-o", `jsonpath={.metadata.annotations.helm\.sh/resource-policy}`); out != "keep" {
			t.Errorf("CRD %s after the uninstall: resource-policy %q", name, out)
		}
	}
	var ts oauthv1alpha1.TokenServer
	if err := suite.c.Get(ctx, client.ObjectKey{Namespace: chartNS, Name: "auth"}, &ts); err != nil || ts.DeletionTimestamp != nil {
		t.Errorf("TokenServer %s/auth after the uninstall: %v, deleting %v", chartNS, err, ts.DeletionTimestamp)
	}
	for _, name := range []string{"before", "after"} {
		var oc oauthv1alpha1.OAuthClient
		if err := suite.c.Get(ctx, client.ObjectKey{Namespace: chartNS, Name: name}, &oc); err != nil || oc.DeletionTimestamp != nil {
			t.Errorf("OAuthClient %s/%s after the uninstall: %v, deleting %v", chartNS, name, err, oc.DeletionTimestamp)
			continue
		}
		var s corev1.Secret
		if err := suite.c.Get(ctx, client.ObjectKey{Namespace: chartNS, Name: oc.Status.SecretName}, &s); err != nil {
			t.Errorf("OAuthClient %s's Secret after the uninstall: %v", name, err)
		}
	}
	if !introspectAt(t, issuer, before, tok.AccessToken) {
		t.Error("the token issued before the uninstall is no longer active")
	}
	eventually(t, time.Minute, "no operator pod left", func() error {
		return noPods(t, "kubeoauth-system")
	})
}

// With crds.keep=false, `helm uninstall` deletes every TokenServer, OAuthClient and
// ConsentGrant and then the CRDs: its pre-delete hook, a Job running the operator
// image's `manager delete-resources` on the node, deletes the resources while the
// operator still runs, so their finalizers release them (each client and grant
// revoked on the token server first), and the garbage collector takes what they
// owned. What stays is the bundled database's claim, as with the documented manual
// order. It reinstalls the release testUninstallKeep removed, which picks up the kept
// resources, switches it to crds.keep=false with helm upgrade, and runs last.
func testUninstallDelete(t *testing.T) {
	ctx := t.Context()
	mustHelm(t, "install", "kubeoauth", "charts/kubeoauth", "-n", "kubeoauth-system", "--wait", "--timeout", "3m")
	// Switched at uninstall time, as docs/install.md says: the upgrade installs
	// nothing but the hook's definition. The CRDs keep their keep policy, so that no
	// upgrade deletes them: the hook does.
	mustHelm(t, "upgrade", "kubeoauth", "charts/kubeoauth", "-n", "kubeoauth-system", "--reuse-values",
		"--set", "crds.keep=false", "--wait", "--timeout", "3m")
	for _, name := range crdNames {
		if out := mustKubectl(t, "get", "crd", name, "-o", `jsonpath={.metadata.annotations.helm\.sh/resource-policy}`); out != "keep" {
			t.Fatalf("CRD %s with crds.keep=false: resource-policy %q, want keep", name, out)
		}
	}
	// A declared ConsentGrant needs a first-party namespace.
	if _, err := kubectl(ctx, "-n", chartNS, "patch", "tokenserver", "auth", "--type", "merge", "-p",
		`{"spec":{"firstPartyNamespaces":{"selector":{"matchLabels":{"kubernetes.io/metadata.name":"`+chartNS+`"}}}}}`); err != nil {
		t.Fatal(err)
	}
	webapp := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: chartNS, Name: "webapp"},
		Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth"}, ClientName: "Web app",
			GrantTypes:   []oauthv1alpha1.GrantType{oauthv1alpha1.GrantAuthorizationCode, oauthv1alpha1.GrantRefreshToken},
			RedirectURIs: []oauthv1alpha1.URL{"http://127.0.0.1:8000/callback"}, Scopes: []oauthv1alpha1.Scope{"openid", "profile"}}}
	grant := &oauthv1alpha1.ConsentGrant{ObjectMeta: metav1.ObjectMeta{Namespace: chartNS, Name: "webapp-alice"},
		Spec: oauthv1alpha1.ConsentGrantSpec{ClientRef: oauthv1alpha1.LocalObjectReference{Name: "webapp"}, Subject: "alice",
			Scopes: []oauthv1alpha1.Scope{"openid", "profile"}}}
	for _, obj := range []client.Object{webapp, grant} {
		if err := suite.c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"before", "after", "webapp"} {
		waitClientReady(t, chartNS, name)
	}
	waitGrantReady(t, grant)
	// What the resources own, to be gone with them: the clients' Secrets, the
	// token server's and its database's StatefulSets and Secrets.
	owned := strings.Fields(mustKubectl(t, "-n", chartNS, "get", "statefulsets,secrets", "-o",
		`jsonpath={range .items[?(@.metadata.ownerReferences)]}{.kind}/{.metadata.name} {end}`))
	if !slices.ContainsFunc(owned, func(s string) bool { return strings.HasPrefix(s, "StatefulSet/") }) ||
		!slices.ContainsFunc(owned, func(s string) bool { return strings.HasPrefix(s, "Secret/") }) {
		t.Fatalf("owned StatefulSets and Secrets in %s: %v", chartNS, owned)
	}
	var dep appsv1.Deployment
	if err := suite.c.Get(ctx, client.ObjectKey{Namespace: "kubeoauth-system", Name: "kubeoauth-manager"}, &dep); err != nil {
		t.Fatal(err)
	}

	hook := watchHook(t)
	start := time.Now()
	// 2m: the hook's own bound per kind; a platform engineer's uninstall takes
	// seconds here.
	out, err := helm(t, "uninstall", "kubeoauth", "-n", "kubeoauth-system", "--wait", "--timeout", "2m")
	took := time.Since(start)
	job, pod, log, logErr := hook.stop(t)
	if err != nil {
		t.Fatalf("helm uninstall with crds.keep=false: %v\nthe hook's log:\n%s", err, log)
	}
	t.Logf("helm uninstall took %s:\n%s", took.Round(time.Second), out)

	// The hook ran, on the node, with the operator's image, and succeeded.
	if job == nil || pod == nil {
		t.Fatalf("no delete-resources hook Job (%v) or pod (%v) ran", job != nil, pod != nil)
	}
	if !jobComplete(job) {
		t.Errorf("the hook Job did not complete: %+v", job.Status)
	}
	if c := pod.Spec.Containers[0]; c.Image != dep.Spec.Template.Spec.Containers[0].Image ||
		len(c.Args) == 0 || c.Args[0] != "delete-resources" {
		t.Errorf("the hook pod ran %s %v, want the operator's image %s, delete-resources", c.Image, c.Args,
			dep.Spec.Template.Spec.Containers[0].Image)
	}
	if pod.Status.Phase != corev1.PodSucceeded || len(pod.Status.ContainerStatuses) != 1 ||
		pod.Status.ContainerStatuses[0].State.Terminated == nil || pod.Status.ContainerStatuses[0].State.Terminated.ExitCode != 0 {
		t.Errorf("the hook pod: phase %s, containers %+v", pod.Status.Phase, pod.Status.ContainerStatuses)
	}
	if logErr != nil {
		t.Errorf("following the hook pod's log: %v", logErr)
	}
	// Its log, the manager binary's own: each resource deleted, grants and clients
	// before the TokenServer they revoke through.
	deleted := []string{"ConsentGrant " + chartNS + "/webapp-alice", "OAuthClient " + chartNS + "/before",
		"OAuthClient " + chartNS + "/after", "OAuthClient " + chartNS + "/webapp", "TokenServer " + chartNS + "/auth"}
	last := 0
	for _, what := range deleted {
		i := strings.Index(log, "deleted "+what+"\n")
		if i < 0 {
			t.Errorf("the hook's log does not say it deleted %s", what)
		}
		last = max(last, i)
	}
	if strings.Index(log, "deleted "+deleted[len(deleted)-1]) != last {
		t.Errorf("the hook deleted the TokenServer before a client or grant")
	}
	for _, name := range crdNames {
		if i := strings.Index(log, "deleted CustomResourceDefinition "+name+"\n"); i < last {
			t.Errorf("the hook's log does not say it deleted CRD %s after the resources", name)
		}
	}
	if t.Failed() {
		t.Fatalf("the hook's log:\n%s", log)
	}
	// The finalizers ran, not just went: the operator deleted each client from the
	// token server and revoked the grant there, and said so in events, which outlive
	// the objects (kubectl get events -n chart-upgrade).
	eventually(t, 30*time.Second, "the operator's events of each client deleted and the grant revoked", func() error {
		out, err := kubectl(ctx, "-n", chartNS, "get", "events", "-o",
			`jsonpath={range .items[*]}{.involvedObject.kind}/{.involvedObject.name} {.reason}{"\n"}{end}`)
		if err != nil {
			return err
		}
		for _, want := range []string{"OAuthClient/before Deleted", "OAuthClient/after Deleted", "OAuthClient/webapp Deleted",
			"ConsentGrant/webapp-alice Revoked"} {
			if !strings.Contains(out, want+"\n") {
				return fmt.Errorf("no event %q in:\n%s", want, out)
			}
		}
		return nil
	})
	// hook-succeeded: the hook's own objects went with it.
	for _, kind := range []string{"job", "serviceaccount"} {
		if out, err := kubectl(ctx, "-n", "kubeoauth-system", "get", kind, "kubeoauth-delete-resources"); err == nil {
			t.Errorf("the hook's %s is left: %s", kind, out)
		}
	}

	// The CRDs are gone: nothing held them Terminating (a finalizer the operator,
	// gone now, would have had to release).
	for _, name := range crdNames {
		if out, err := kubectl(ctx, "get", "crd", name); err == nil || !strings.Contains(out, "NotFound") {
			t.Errorf("CRD %s after the uninstall: %v %s", name, err, out)
		}
	}
	// What the resources owned: the garbage collector's, after them.
	cs, err := kubernetes.NewForConfig(suite.cfg)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "what the TokenServer and the OAuthClients owned is gone", func() error {
		var left []string
		for _, o := range owned {
			kind, name, _ := strings.Cut(o, "/")
			var err error
			if kind == "StatefulSet" {
				_, err = cs.AppsV1().StatefulSets(chartNS).Get(ctx, name, metav1.GetOptions{})
			} else {
				_, err = cs.CoreV1().Secrets(chartNS).Get(ctx, name, metav1.GetOptions{})
			}
			if !apierrors.IsNotFound(err) {
				left = append(left, o)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("left: %v", left)
		}
		return nil
	})
	eventually(t, time.Minute, "no pod of the release or of its resources left", func() error {
		if err := noPods(t, "kubeoauth-system"); err != nil {
			return err
		}
		return noPods(t, chartNS)
	})
	// Nothing else: the database's claim stays, as docs/operator.md says of every
	// uninstall (your data).
	var left []string
	kept := map[string]bool{chartNS + "/persistentvolumeclaim/data-auth-db-0": true}
	for _, ns := range []string{"kubeoauth-system", chartNS} {
		for _, name := range strings.Fields(mustKubectl(t, "-n", ns, "get",
			"all,secrets,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets,pvc", "-o", "name")) {
			if !kept[ns+"/"+name] && !isDefault(name) {
				left = append(left, ns+"/"+name)
			}
		}
	}
	left = append(left, strings.Fields(mustKubectl(t, "get", "-l", "app.kubernetes.io/instance=kubeoauth", "-o", "name",
		"customresourcedefinitions,clusterroles,clusterrolebindings,mutatingadmissionpolicies,mutatingadmissionpolicybindings"))...)
	if len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func noPods(t *testing.T, ns string) error {
	var pods corev1.PodList
	if err := suite.c.List(t.Context(), &pods, client.InNamespace(ns)); err != nil {
		return err
	}
	if len(pods.Items) > 0 {
		var names []string
		for _, p := range pods.Items {
			names = append(names, p.Name+" ("+string(p.Status.Phase)+")")
		}
		return fmt.Errorf("pods in %s: %v", ns, names)
	}
	return nil
}

func jobComplete(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
			return j.Status.Succeeded == 1
		}
	}
	return false
}

func waitGrantReady(t *testing.T, cg *oauthv1alpha1.ConsentGrant) {
	t.Helper()
	eventually(t, time.Minute, "ConsentGrant "+cg.Name+" Ready", func() error {
		var cur oauthv1alpha1.ConsentGrant
		if err := suite.c.Get(t.Context(), client.ObjectKeyFromObject(cg), &cur); err != nil {
			return err
		}
		for _, c := range cur.Status.Conditions {
			if c.Type == oauthv1alpha1.ConditionReady && c.Status == metav1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", cur.Status.Conditions)
	})
}

// existingClient reads an OAuthClient's credentials from its Secret.
func existingClient(t *testing.T, ns, name string) clientcredentials.Config {
	t.Helper()
	oc := waitClientReady(t, ns, name)
	var s corev1.Secret
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: oc.Status.SecretName}, &s); err != nil {
		t.Fatal(err)
	}
	return clientcredentials.Config{ClientID: string(s.Data["client_id"]), ClientSecret: string(s.Data["client_secret"]),
		TokenURL: string(s.Data["token_url"])}
}

// hookWatch sees the release's delete-resources hook while helm uninstall runs. A
// hook that succeeds is deleted at once (hook-succeeded), its pod with it, so what
// `kubectl get` and `kubectl logs` would show afterwards is gone: the watch keeps
// the Job and the pod as they last were (their DELETED events carry that), and
// follows the pod's log from its start to the container's exit.
type hookWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	logDone chan struct{}

	mu        sync.Mutex
	job       *batchv1.Job
	pod       *corev1.Pod
	following bool
	log       strings.Builder
	logErr    error
	watchErr  error
}

func watchHook(t *testing.T) *hookWatch {
	t.Helper()
	cs, err := kubernetes.NewForConfig(suite.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=delete-resources"}
	jobs, err := cs.BatchV1().Jobs("kubeoauth-system").Watch(ctx, sel)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	pods, err := cs.CoreV1().Pods("kubeoauth-system").Watch(ctx, sel)
	if err != nil {
		jobs.Stop()
		cancel()
		t.Fatal(err)
	}
	h := &hookWatch{cancel: cancel, done: make(chan struct{}), logDone: make(chan struct{})}
	t.Cleanup(func() { cancel(); <-h.done })
	go func() {
		defer close(h.done)
		defer jobs.Stop()
		defer pods.Stop()
		jobCh, podCh := jobs.ResultChan(), pods.ResultChan()
		for {
			var ev watch.Event
			var ok bool
			select {
			case <-ctx.Done():
				return
			case ev, ok = <-jobCh:
				if !ok {
					jobCh = nil
				}
			case ev, ok = <-podCh:
				if !ok {
					podCh = nil
				}
			}
			h.mu.Lock()
			switch o := ev.Object.(type) {
			case *batchv1.Job:
				h.job = o
			case *corev1.Pod:
				h.pod = o
				if !h.following && len(o.Status.ContainerStatuses) > 0 &&
					(o.Status.ContainerStatuses[0].State.Running != nil || o.Status.ContainerStatuses[0].State.Terminated != nil) {
					h.following = true
					go h.follow(ctx, cs, o.Name)
				}
			}
			if !ok || ev.Type == watch.Error {
				// What it saw afterwards would be missing: the scenario cannot tell.
				h.watchErr = fmt.Errorf("a watch of the hook ended early: %+v", ev.Object)
			}
			h.mu.Unlock()
		}
	}()
	return h
}

// follow reads the pod's log until its container exits.
func (h *hookWatch) follow(ctx context.Context, cs *kubernetes.Clientset, pod string) {
	defer close(h.logDone)
	r, err := cs.CoreV1().Pods("kubeoauth-system").GetLogs(pod, &corev1.PodLogOptions{Follow: true}).Stream(ctx)
	if err == nil {
		defer func() { _ = r.Close() }()
		var data []byte
		data, err = io.ReadAll(r)
		h.mu.Lock()
		h.log.Write(data)
		h.mu.Unlock()
	}
	h.mu.Lock()
	h.logErr = err
	h.mu.Unlock()
}

// stop ends the watch once the log, if a pod started, has been read to its end,
// and returns what it saw.
func (h *hookWatch) stop(t *testing.T) (job *batchv1.Job, pod *corev1.Pod, log string, logErr error) {
	t.Helper()
	h.mu.Lock()
	following := h.following
	h.mu.Unlock()
	if following {
		select {
		case <-h.logDone:
		case <-time.After(time.Minute):
			t.Error("the hook pod's log did not end within a minute of the uninstall")
		}
	}
	h.cancel()
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watchErr != nil {
		t.Error(h.watchErr)
	}
	return h.job, h.pod, h.log.String(), h.logErr
}
