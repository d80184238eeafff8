package v1alpha1_test

import (
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// TestMetricsAccessValidation: spec.metrics.from takes NetworkPolicy peers, a bounded
// number of them, and only on a bundled server, whose NetworkPolicy the operator writes.
func TestMetricsAccessValidation(t *testing.T) {
	prometheus := networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "prometheus"}}}
	tests := map[string]struct {
		spec func(*v1.TokenServerSpec)
		want rejected
	}{
		"Prometheus's pods": {func(s *v1.TokenServerSpec) {
			s.Metrics = &v1.MetricsAccess{From: []networkingv1.NetworkPolicyPeer{prometheus}}
		}, ok()},
		"an address block": {func(s *v1.TokenServerSpec) {
			s.Metrics = &v1.MetricsAccess{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}}}}
		}, ok()},
		"17 peers": {func(s *v1.TokenServerSpec) {
			s.Metrics = &v1.MetricsAccess{}
			for range 17 {
				s.Metrics.From = append(s.Metrics.From, prometheus)
			}
		}, reject("spec.metrics.from", "must have at most 16 items")},
		"metrics on an external server": {func(s *v1.TokenServerSpec) {
			s.Image, s.Database = "", nil
			s.External = &v1.ExternalTokenServer{AdminURL: "https://auth-admin.internal:4445",
				TokenSecretRef: v1.SecretKeyReference{Name: "auth-admin"}}
			s.Metrics = &v1.MetricsAccess{From: []networkingv1.NetworkPolicyPeer{prometheus}}
		}, reject("spec.metrics", "metrics is for bundled token servers")},
	}
	for name, tt := range tests {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			create(t, tokenServer(tt.spec), tt.want)
		})
	}
}
