package v1alpha1_test

import (
	"context"
	"strings"
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
				Labels:           map[string]v1.LabelValue{"team": "identity", "app.kubernetes.io/part-of": "sso"},
				Annotations:      map[string]string{"prometheus.io/scrape": "true"}}
			s.Database.Managed.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"backup": "daily"}}
		}, ok()},
		"the instance label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"app.kubernetes.io/instance": "other"}}
		}, reject("spec.pod.labels", labelsMsg)},
		"the component label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"app.kubernetes.io/component": "database"}}
		}, reject("spec.pod.labels", labelsMsg)},
		"the color label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"oauth.kubeoauth.io/color": "green"}}
		}, reject("spec.pod.labels", labelsMsg)},
		"the serving label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{v1.LabelServing: "true"}}
		}, reject("spec.pod.labels", labelsMsg)},
		"the database's managed-by label": {func(s *v1.TokenServerSpec) {
			s.Database.Managed.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"app.kubernetes.io/managed-by": "me"}}
		}, reject("spec.database.managed.pod.labels", labelsMsg)},
		"the config hash annotation": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Annotations: map[string]string{"oauth.kubeoauth.io/config-hash": "x"}}
		}, reject("spec.pod.annotations", annotationsMsg)},
		// Keys and values a pod cannot carry: the TokenServer is refused, not the
		// StatefulSet or Job the operator builds from it later.
		"a label value with a space": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"team": "identity platform"}}
		}, reject("spec.pod.labels[team]", "must be a label value")},
		"a label value of 64 characters": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"team": v1.LabelValue(strings.Repeat("a", 64))}}
		}, reject("spec.pod.labels.team", "may not be more than 63")},
		"a label key with an uppercase prefix": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"Team.Example.com/x": "y"}}
		}, reject("spec.pod.labels", "keys must be label keys")},
		"a label key whose name is 64 characters": {func(s *v1.TokenServerSpec) {
			s.Database.Managed.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"example.com/" + strings.Repeat("n", 64): "y"}}
		}, reject("spec.database.managed.pod.labels", "keys must be label keys")},
		"a label key whose prefix is 254 characters": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." +
				strings.Repeat("c", 63) + "." + strings.Repeat("d", 62) + "/x": "y"}}
		}, reject("spec.pod.labels", "keys must be label keys")},
		"a label key with two slashes": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"example.com/a/b": "y"}}
		}, reject("spec.pod.labels", "keys must be label keys")},
		"an annotation key with a space": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Annotations: map[string]string{"team name": "identity"}}
		}, reject("spec.pod.annotations", "keys must be annotation keys")},
		"the Job controller's uid label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"batch.kubernetes.io/controller-uid": "x"}}
		}, reject("spec.pod.labels", "the labels the Job and StatefulSet controllers own")},
		"the Job controller's legacy job-name label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"job-name": "x"}}
		}, reject("spec.pod.labels", "the labels the Job and StatefulSet controllers own")},
		"the StatefulSet controller's pod-name label": {func(s *v1.TokenServerSpec) {
			s.Database.Managed.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"statefulset.kubernetes.io/pod-name": "auth-db-0"}}
		}, reject("spec.database.managed.pod.labels", "the labels the Job and StatefulSet controllers own")},
		"the StatefulSet controller's revision label": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{"controller-revision-hash": "x"}}
		}, reject("spec.pod.labels", "the labels the Job and StatefulSet controllers own")},
		"the Job controller's annotations": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Annotations: map[string]string{"batch.kubernetes.io/job-completion-index": "0"}}
		}, reject("spec.pod.annotations", "the annotations the Job and StatefulSet controllers own")},
		"the longest label key and value, an empty value, any annotation value": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: map[string]v1.LabelValue{
				strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61) +
					"/" + strings.Repeat("n", 63): v1.LabelValue(strings.Repeat("v", 63)),
				"empty": "", "a": "b", "x_y.z-1": "A.b_c-2"},
				Annotations: map[string]string{"sidecar.istio.io/inject": "false", "description": "the token server: {\"json\": true}"}}
		}, ok()},
		// spec.jobs.pod takes the same rules as spec.pod, each error naming it.
		"the Jobs' own labels and annotations": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{Labels: v1.PodLabels{"sidecar.istio.io/inject": "true"}}
			s.Jobs.Pod = &v1.JobPodMetadata{Labels: v1.PodLabels{"sidecar.istio.io/inject": "false", "empty": ""},
				Annotations: v1.PodAnnotations{"linkerd.io/inject": "disabled", "vault.hashicorp.com/agent-inject": "false"}}
		}, ok()},
		"a Job label key with an uppercase prefix": {func(s *v1.TokenServerSpec) {
			s.Jobs.Pod = &v1.JobPodMetadata{Labels: v1.PodLabels{"Sidecar.Istio.io/inject": "false"}}
		}, reject("spec.jobs.pod.labels", "keys must be label keys")},
		"a Job label value with a space": {func(s *v1.TokenServerSpec) {
			s.Jobs.Pod = &v1.JobPodMetadata{Labels: v1.PodLabels{"team": "identity platform"}}
		}, reject("spec.jobs.pod.labels[team]", "must be a label value")},
		"the instance label on the Jobs": {func(s *v1.TokenServerSpec) {
			s.Jobs.Pod = &v1.JobPodMetadata{Labels: v1.PodLabels{"app.kubernetes.io/instance": "other"}}
		}, reject("spec.jobs.pod.labels", labelsMsg)},
		"the Job controller's job-name label on the Jobs": {func(s *v1.TokenServerSpec) {
			s.Jobs.Pod = &v1.JobPodMetadata{Labels: v1.PodLabels{"job-name": "x"}}
		}, reject("spec.jobs.pod.labels", "the labels the Job and StatefulSet controllers own")},
		"the config hash annotation on the Jobs": {func(s *v1.TokenServerSpec) {
			s.Jobs.Pod = &v1.JobPodMetadata{Annotations: v1.PodAnnotations{"oauth.kubeoauth.io/config-hash": "x"}}
		}, reject("spec.jobs.pod.annotations", annotationsMsg)},
		"the Job controller's annotation on the Jobs": {func(s *v1.TokenServerSpec) {
			s.Jobs.Pod = &v1.JobPodMetadata{Annotations: v1.PodAnnotations{"batch.kubernetes.io/job-completion-index": "0"}}
		}, reject("spec.jobs.pod.annotations", "the annotations the Job and StatefulSet controllers own")},
		"a Job annotation key with a space": {func(s *v1.TokenServerSpec) {
			s.Jobs.Pod = &v1.JobPodMetadata{Annotations: v1.PodAnnotations{"team name": "identity"}}
		}, reject("spec.jobs.pod.annotations", "keys must be annotation keys")},
		"Job pod metadata on an external server": {func(s *v1.TokenServerSpec) {
			s.Image, s.Database = "", nil
			s.External = &v1.ExternalTokenServer{AdminURL: "https://auth-admin.internal:4445",
				TokenSecretRef: v1.SecretKeyReference{Name: "auth-admin"}}
			s.Jobs.Pod = &v1.JobPodMetadata{Labels: v1.PodLabels{"sidecar.istio.io/inject": "false"}}
		}, reject("spec.jobs.pod", "jobs.pod is for bundled token servers")},
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
