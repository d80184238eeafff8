package v1alpha1_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// TestPodSettingsValidation: pod labels and annotations may not take the keys the
// operator selects and rolls its pods by, and the error names the field.
func TestPodSettingsValidation(t *testing.T) {
	const labelsMsg = "must not set the operator's own labels"
	const annotationsMsg = "must not set the operator's own annotations"
	tests := map[string]struct {
		spec func(*v1.TokenServerSpec)
		want rejected
	}{
		"every setting": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{
				Resources: &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")}},
				Tolerations: []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "identity",
					Effect: corev1.TaintEffectNoSchedule}},
				NodeSelector: map[string]string{"pool": "identity"}, PriorityClassName: "identity-critical",
				ImagePullSecrets: []corev1.LocalObjectReference{{Name: "registry"}},
				Labels:           map[string]string{"team": "identity", "app.kubernetes.io/part-of": "sso"},
				Annotations:      map[string]string{"prometheus.io/scrape": "true"}}
			s.Database.Managed.Pod = &v1.PodSettings{Labels: map[string]string{"backup": "daily"}}
		}, ok()},
		"the instance label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]string{"app.kubernetes.io/instance": "other"}}
		}, reject("spec.pod.labels", labelsMsg)},
		"the component label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]string{"app.kubernetes.io/component": "database"}}
		}, reject("spec.pod.labels", labelsMsg)},
		"the color label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]string{"oauth.kubeoauth.io/color": "green"}}
		}, reject("spec.pod.labels", labelsMsg)},
		"the serving label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]string{v1.LabelServing: "true"}}
		}, reject("spec.pod.labels", labelsMsg)},
		"the database's managed-by label": {func(s *v1.TokenServerSpec) {
			s.Database.Managed.Pod = &v1.PodSettings{Labels: map[string]string{"app.kubernetes.io/managed-by": "me"}}
		}, reject("spec.database.managed.pod.labels", labelsMsg)},
		"the config hash annotation": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Annotations: map[string]string{"oauth.kubeoauth.io/config-hash": "x"}}
		}, reject("spec.pod.annotations", annotationsMsg)},
		"a negative Job TTL": {func(s *v1.TokenServerSpec) {
			s.Jobs.TTLSecondsAfterFinished = new(int32(-1))
		}, reject("spec.jobs.ttlSecondsAfterFinished", "should be greater than or equal to 0")},
		"pod settings on an external server": {func(s *v1.TokenServerSpec) {
			s.Image, s.Database = "", nil
			s.External = &v1.ExternalTokenServer{AdminURL: "https://auth-admin.internal:4445",
				TokenSecretRef: v1.SecretKeyReference{Name: "auth-admin"}}
			s.Pod = &v1.PodSettings{PriorityClassName: "x"}
		}, reject("spec.pod", "pod is for bundled token servers")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			create(t, tokenServer(tt.spec), tt.want)
		})
	}
}

// TestJobSettingsDefault: a TokenServer that says nothing of Jobs gets the TTL
// that cleans up its finished migration Job.
func TestJobSettingsDefault(t *testing.T) {
	ts := tokenServer()
	create(t, ts, ok())
	var got v1.TokenServer
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), &got); err != nil {
		t.Fatal(err)
	}
	if ttl := got.Spec.Jobs.TTLSecondsAfterFinished; ttl == nil || *ttl != 3600 {
		t.Errorf("spec.jobs.ttlSecondsAfterFinished defaults to %v, want 3600", ttl)
	}
}
