package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
)

// tokenServerReconcileErrors is controller_runtime_reconcile_errors_total of the
// suite's manager's TokenServer controller.
func tokenServerReconcileErrors(t *testing.T) float64 {
	const controller = "tokenserver"
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_errors_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == controller {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestTokenServerFailureIsAnError: a pass of a TokenServer that fails (an admin API
// answering 503, not a state the conditions report as waiting) is an error to
// controller-runtime: Degraded says why, and the pass is retried with backoff and
// counted in controller_runtime_reconcile_errors_total, where an operator's alerts
// look. Once the admin API answers, the server is Ready.
func TestTokenServerFailureIsAnError(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "failing", nil)
	srv, failing, refused := failingAdmin(t)

	errorsBefore := tokenServerReconcileErrors(t)
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
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, controllers.ReasonAdminUnreachable)
	waitReadyMessage(t, ts, "admin API health check")

	eventually(t, 10*time.Second, "the failing passes returned to controller-runtime as errors", func() bool {
		return refused.Load() >= 5 && tokenServerReconcileErrors(t)-errorsBefore >= 5
	}, func() string {
		return fmt.Sprintf("%d health checks refused, %v reconcile errors counted for controller tokenserver",
			refused.Load(), tokenServerReconcileErrors(t)-errorsBefore)
	})

	failing.Store(false)
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonAdminReachable)
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionFalse, controllers.ReasonAdminReachable)
}
