//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// The pages from a ConfigMap on real pods: the operator copies the checked templates
// into auth-pages, the kubelet mounts it (..data and its links), the token server
// serves them with the brand; a template that cannot be used is refused in Degraded,
// and a pod that restarts meanwhile still starts, with the last good templates.
func testBrandedPages(t *testing.T) {
	ctx := t.Context()
	const ns = "branding"
	issuer := forwardService(t, ns, "auth")
	logo := "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRoPSIxNiIgaGVpZ2h0PSI4Ii8+"
	good := `{{template "top" .}}<p id="custom-login">Welcome to {{.Brand.Name}}</p>{{template "bottom" .}}`
	templates := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-templates"},
		Data: map[string]string{"login.html": good}}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), Image: imageV1, Replicas: ptr.To[int32](1),
			Database: &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{StorageSize: resource.MustParse("1Gi")}},
			Branding: &oauthv1alpha1.Branding{DisplayName: "Example Corp", LogoURL: logo,
				TemplatesConfigMapRef: &oauthv1alpha1.LocalObjectReference{Name: templates.Name}}}}
	smallPods(ts)
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}},
		templates, ts,
	} {
		if err := suite.c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	// Its pods are not needed by the scenarios after this one.
	t.Cleanup(func() { _, _ = kubectl(t.Context(), "-n", ns, "delete", "tokenserver", "auth", "--wait=false") })
	condition := func(typ, reason, says string) func() error { return tokenServerCondition(ctx, ts, typ, reason, says) }
	loginPage := func(what string) {
		t.Helper()
		eventually(t, time.Minute, what, func() error {
			resp, err := http.Get(issuer + "/login") // #nosec G107 -- the test's own port-forward
			if err != nil {
				return err
			}
			defer func() { _ = resp.Body.Close() }()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(string(body), `<p id="custom-login">Welcome to Example Corp</p>`) ||
				!strings.Contains(string(body), `<span id="brand-name">Example Corp</span>`) ||
				resp.Header.Get("Content-Security-Policy") != "default-src 'none'; style-src 'unsafe-inline'; "+
					"form-action 'self' http: https:; frame-ancestors 'none'; img-src data:" {
				return fmt.Errorf("%d, CSP %q: %.600s", resp.StatusCode, resp.Header.Get("Content-Security-Policy"), body)
			}
			return nil
		})
	}
	eventually(t, 4*time.Minute, "TokenServer branding Ready", condition(oauthv1alpha1.ConditionReady, "Available", ""))
	loginPage("the login page from the ConfigMap, with the brand")

	// A template that fails on the page's data: refused, the pods untouched.
	templates.Data["login.html"] = "{{.Nope}}"
	if err := suite.c.Update(ctx, templates); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the bad template refused", condition(oauthv1alpha1.ConditionDegraded, "PageTemplatesInvalid",
		"ConfigMap auth-templates key login.html: template: login.html:1:2: executing"))
	// A pod that restarts now reads what the pods mount: the last good templates.
	var pod corev1.Pod
	if err := suite.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "auth-blue-0"}, &pod); err != nil {
		t.Fatal(err)
	}
	if err := suite.c.Delete(ctx, &pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "auth-blue-0 back and ready", func() error {
		var again corev1.Pod
		if err := suite.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "auth-blue-0"}, &again); err != nil {
			return err
		}
		for _, c := range again.Status.Conditions {
			if again.UID != pod.UID && c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("pod %s, phase %s", again.UID, again.Status.Phase)
	})
	loginPage("the restarted pod's login page, from the last good templates")
	// The TokenServer reads the pod's readiness through its StatefulSet's status, a
	// pass later than the pod: Ready comes back, while the refused template stays
	// Degraded.
	eventually(t, time.Minute, "Ready again with the refused template", condition(oauthv1alpha1.ConditionReady, "Available", ""))
	if err := suite.c.Get(ctx, client.ObjectKeyFromObject(ts), ts); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionDegraded); c == nil ||
		c.Status != metav1.ConditionTrue || c.Reason != "PageTemplatesInvalid" {
		t.Errorf("Degraded once Ready again: %+v; want PageTemplatesInvalid", c)
	}
}
