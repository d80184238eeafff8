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
// operator selects and rolls its pods by, nothing a pod template may not carry is
// accepted, and the error names the field. What is accepted, the operator's
// objects built from it are too (dry run).
func TestPodSettingsValidation(t *testing.T) {
	const labelsMsg = "must not set the operator's own labels"
	const annotationsMsg = "must not set the operator's own annotations"
	q := resource.MustParse
	pod := func(p v1.PodSettings) func(*v1.TokenServerSpec) {
		return func(s *v1.TokenServerSpec) { s.Pod = &p }
	}
	tests := map[string]struct {
		spec func(*v1.TokenServerSpec)
		want rejected
	}{
		"every setting": {func(s *v1.TokenServerSpec) {
			s.Pod = &v1.PodSettings{
				Resources:    &v1.ResourceRequirements{Requests: v1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")}},
				Tolerations:  []v1.Toleration{{Key: "dedicated", Operator: "Equal", Value: "identity", Effect: "NoSchedule"}},
				NodeSelector: map[string]v1.LabelValue{"pool": "identity"}, PriorityClassName: "identity-critical",
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
		// What a pod template may not carry is refused at the TokenServer, naming
		// the field, not later at the operator's StatefulSet or Job.
		"a nodeSelector value with a space": {pod(v1.PodSettings{NodeSelector: map[string]v1.LabelValue{"pool": "identity nodes"}}),
			reject("spec.pod.nodeSelector[pool]", "must be a label value")},
		"a nodeSelector key with a space": {pod(v1.PodSettings{NodeSelector: map[string]v1.LabelValue{"node pool": "identity"}}),
			reject("spec.pod.nodeSelector", "keys must be label keys")},
		"a PostgreSQL nodeSelector value with a space": {func(s *v1.TokenServerSpec) {
			s.Database.Managed.Pod = &v1.PodSettings{NodeSelector: map[string]v1.LabelValue{"pool": "identity nodes"}}
		}, reject("spec.database.managed.pod.nodeSelector[pool]", "must be a label value")},
		"a priorityClassName that is no DNS subdomain": {pod(v1.PodSettings{PriorityClassName: "Identity Critical"}),
			reject("spec.pod.priorityClassName", "must be a PriorityClass name")},
		"a toleration with operator Exists and a value": {pod(v1.PodSettings{Tolerations: []v1.Toleration{
			{Key: "dedicated", Operator: "Exists", Value: "identity"}}}), reject("spec.pod.tolerations[0].value", "must be empty with operator Exists")},
		"a toleration with an unknown effect": {pod(v1.PodSettings{Tolerations: []v1.Toleration{
			{Key: "dedicated", Operator: "Equal", Value: "identity", Effect: "NoSchedul"}}}),
			reject("spec.pod.tolerations[0].effect", "must be NoSchedule, PreferNoSchedule, NoExecute or empty")},
		"a toleration with an unknown operator": {pod(v1.PodSettings{Tolerations: []v1.Toleration{
			{Key: "dedicated", Operator: "In", Value: "identity"}}}), reject("spec.pod.tolerations[0].operator", "must be Equal or Exists")},
		"tolerationSeconds with effect NoSchedule": {pod(v1.PodSettings{Tolerations: []v1.Toleration{
			{Key: "dedicated", Operator: "Exists", Effect: "NoSchedule", TolerationSeconds: new(int64(60))}}}),
			reject("spec.pod.tolerations[0].tolerationSeconds", "is only for effect NoExecute")},
		"a toleration without key or operator Exists": {pod(v1.PodSettings{Tolerations: []v1.Toleration{{Value: "identity"}}}),
			reject("spec.pod.tolerations[0]", "an empty key needs operator Exists")},
		"a toleration key with a space": {pod(v1.PodSettings{Tolerations: []v1.Toleration{{Key: "dedicated node", Operator: "Exists"}}}),
			reject("spec.pod.tolerations[0].key", "must be a label key")},
		"tolerations a pod may carry": {pod(v1.PodSettings{Tolerations: []v1.Toleration{{Operator: "Exists"},
			{Key: "node.kubernetes.io/unreachable", Operator: "Exists", Effect: "NoExecute", TolerationSeconds: new(int64(30))},
			{Key: "dedicated", Value: "identity", Effect: "PreferNoSchedule"}}}), ok()},
		"a topology spread constraint with maxSkew 0": {pod(v1.PodSettings{TopologySpreadConstraints: []v1.TopologySpreadConstraint{
			{MaxSkew: 0, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.DoNotSchedule}}}),
			reject("spec.pod.topologySpreadConstraints[0].maxSkew", "should be greater than or equal to 1")},
		"a topology spread constraint with an unknown whenUnsatisfiable": {pod(v1.PodSettings{TopologySpreadConstraints: []v1.TopologySpreadConstraint{
			{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: "Never"}}}),
			reject("spec.pod.topologySpreadConstraints[0].whenUnsatisfiable", "Unsupported value")},
		"a topology spread constraint without topologyKey": {pod(v1.PodSettings{TopologySpreadConstraints: []v1.TopologySpreadConstraint{
			{MaxSkew: 1, WhenUnsatisfiable: corev1.ScheduleAnyway}}}),
			reject("spec.pod.topologySpreadConstraints[0].topologyKey", "should be at least 1 chars long")},
		"minDomains with ScheduleAnyway": {pod(v1.PodSettings{TopologySpreadConstraints: []v1.TopologySpreadConstraint{
			{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.ScheduleAnyway, MinDomains: new(int32(2))}}}),
			reject("spec.pod.topologySpreadConstraints[0].minDomains", "is only for whenUnsatisfiable DoNotSchedule")},
		"a topology spread a pod may carry": {pod(v1.PodSettings{TopologySpreadConstraints: []v1.TopologySpreadConstraint{
			{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.DoNotSchedule, MinDomains: new(int32(2)),
				LabelSelector:  &v1.PeerSelector{MatchLabels: map[string]v1.LabelValue{"app.kubernetes.io/name": "tokenserver"}},
				MatchLabelKeys: []v1.LabelKey{"pod-template-hash"}}}}), ok()},
		"a node affinity requirement with an unknown operator": {pod(v1.PodSettings{Affinity: &v1.Affinity{NodeAffinity: &v1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: "pool", Operator: "Equals", Values: []string{"identity"}}}}}}}}}),
			reject("spec.pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator",
				"Unsupported value")},
		"a node affinity Gt that is no integer": {pod(v1.PodSettings{Affinity: &v1.Affinity{NodeAffinity: &v1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: "cores", Operator: "Gt", Values: []string{"many"}}}}}}}}}),
			reject("spec.pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0]",
				"one integer for Gt and Lt")},
		"a node affinity field other than metadata.name": {pod(v1.PodSettings{Affinity: &v1.Affinity{NodeAffinity: &v1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchFields: []v1.NodeSelectorRequirement{{Key: "spec.unschedulable", Operator: "In", Values: []string{"false"}}}}}}}}}),
			reject("spec.pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields",
				"each field requirement must be on metadata.name")},
		"a pod anti-affinity term without topologyKey": {pod(v1.PodSettings{Affinity: &v1.Affinity{PodAntiAffinity: &v1.PodAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []v1.PodAffinityTerm{{}}}}}),
			reject("spec.pod.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey", "should be at least 1 chars long")},
		"a preferred anti-affinity term of weight 0": {pod(v1.PodSettings{Affinity: &v1.Affinity{PodAntiAffinity: &v1.PodAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []v1.WeightedPodAffinityTerm{{Weight: 0,
				PodAffinityTerm: v1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname"}}}}}}),
			reject("spec.pod.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight", "should be greater than or equal to 1")},
		"an affinity a pod may carry": {pod(v1.PodSettings{Affinity: &v1.Affinity{
			NodeAffinity: &v1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: "pool", Operator: "In", Values: []string{"identity"}},
					{Key: "cores", Operator: "Gt", Values: []string{"3"}}, {Key: "spot", Operator: "DoesNotExist"}},
				MatchFields: []v1.NodeSelectorRequirement{{Key: "metadata.name", Operator: "NotIn",
					Values: []string{"ip-10-0-12-34.eu-central-1.compute.internal.cluster-one.example.com"}}}}}},
				PreferredDuringSchedulingIgnoredDuringExecution: []v1.PreferredSchedulingTerm{{Weight: 100,
					Preference: v1.NodeSelectorTerm{MatchExpressions: []v1.NodeSelectorRequirement{{Key: "ssd", Operator: "Exists"}}}}}},
			PodAntiAffinity: &v1.PodAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []v1.WeightedPodAffinityTerm{{Weight: 50,
				PodAffinityTerm: v1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname", Namespaces: []string{"identity"},
					LabelSelector: &v1.PeerSelector{MatchLabels: map[string]v1.LabelValue{"app.kubernetes.io/name": "tokenserver"}}}}}}}}), ok()},
		"a CPU request over its limit": {pod(v1.PodSettings{Resources: &v1.ResourceRequirements{
			Requests: v1.ResourceList{corev1.ResourceCPU: q("2")}, Limits: v1.ResourceList{corev1.ResourceCPU: q("1")}}}),
			reject("spec.pod.resources", "each request of cpu, memory or ephemeral-storage must be at most its limit")},
		"a negative memory request": {pod(v1.PodSettings{Resources: &v1.ResourceRequirements{
			Requests: v1.ResourceList{corev1.ResourceMemory: q("-128Mi")}}}), reject("spec.pod.resources.requests", "amounts must not be negative")},
		"a resource name that is neither standard nor qualified": {pod(v1.PodSettings{Resources: &v1.ResourceRequirements{
			Requests: v1.ResourceList{"gpu": q("1")}}}), reject("spec.pod.resources.requests", "names must be cpu, memory, ephemeral-storage")},
		"a resource claim no pod declares": {pod(v1.PodSettings{Resources: &v1.ResourceRequirements{
			Claims: []corev1.ResourceClaim{{Name: "gpu"}}}}), reject("spec.pod.resources.claims", "must be empty")},
		"a Job memory request over its limit": {func(s *v1.TokenServerSpec) {
			s.Jobs.Resources = &v1.ResourceRequirements{Requests: v1.ResourceList{corev1.ResourceMemory: q("2Gi")},
				Limits: v1.ResourceList{corev1.ResourceMemory: q("1Gi")}}
		}, reject("spec.jobs.resources", "must be at most its limit")},
		"resources a pod may carry": {pod(v1.PodSettings{Resources: &v1.ResourceRequirements{
			Requests: v1.ResourceList{corev1.ResourceCPU: q("500m"), corev1.ResourceMemory: q("1Gi"), "example.com/dongle": q("1")},
			Limits:   v1.ResourceList{corev1.ResourceCPU: q("1"), corev1.ResourceMemory: q("1Gi"), "example.com/dongle": q("1")}}}), ok()},
		"a storageClassName that is no DNS subdomain": {func(s *v1.TokenServerSpec) { s.Database.Managed.StorageClassName = new("Fast SSD") },
			reject("spec.database.managed.storageClassName", "must be a StorageClass name")},
		"a negative storageSize": {func(s *v1.TokenServerSpec) { s.Database.Managed.StorageSize = q("-1Gi") },
			reject("spec.database.managed.storageSize", "must be greater than zero")},
		"pod settings on an external server": {func(s *v1.TokenServerSpec) {
			s.Image, s.Database = "", nil
			s.External = &v1.ExternalTokenServer{AdminURL: "https://auth-admin.internal:4445",
				TokenSecretRef: v1.SecretKeyReference{Name: "auth-admin"}}
			s.Pod = &v1.PodSettings{PriorityClassName: "x"}
		}, reject("spec.pod", "pod is for bundled token servers")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ts := tokenServer(tt.spec)
			create(t, ts, tt.want)
			if tt.want == ok() {
				if refused := operatorObjectsRefused(t, ts); len(refused) > 0 {
					t.Fatalf("the TokenServer was accepted, and the operator's objects are then refused: %s", strings.Join(refused, "; "))
				}
			}
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
