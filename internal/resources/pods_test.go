package resources

import (
	"maps"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// templates are every pod template the operator makes for ts, by what they run.
func templates(ts *oauthv1alpha1.TokenServer) map[string]*corev1.PodTemplateSpec {
	blue := oauthv1alpha1.DatabaseRef{SecretName: "auth-db", Key: "dsn"}
	copyDB := oauthv1alpha1.DatabaseRef{SecretName: "auth-0badc0de-db", Key: "dsn"}
	in := Inputs{Color: ColorBlue, Image: "tokenserver:v1", Replicas: 3}
	return map[string]*corev1.PodTemplateSpec{
		"server":    &TokenServerStatefulSet(ts, in).Spec.Template,
		"database":  &DatabaseStatefulSet(ts).Spec.Template,
		"migration": &MigrationJob(ts, "tokenserver:v1").Spec.Template,
		"plan":      &PlanJob(ts, "auth-1-plan", "tokenserver:v2").Spec.Template,
		"expand":    &ExpandJob(ts, "auth-1-expand", "tokenserver:v2").Spec.Template,
		"contract":  &ContractJob(ts, "auth-1-contract", "tokenserver:v2").Spec.Template,
		"verify":    &VerifyJob(ts, "auth-1-verify", "tokenserver:v2", ColorGreen, ColorBlue).Spec.Template,
		"copy":      &CopyJob(ts, "auth-1-copy", "tokenserver:v2", "1", ColorURL(ts, ColorBlue), blue, copyDB).Spec.Template,
		"cutover":   &CutoverJob(ts, "auth-1-cutover", "tokenserver:v2", "1", "forward", ColorURL(ts, ColorGreen), blue, copyDB).Spec.Template,
		"cleanup":   &CleanupJob(ts, "auth-1-cleanup", "tokenserver:v2", blue, "").Spec.Template,
		"replay":    &ReplayDeployment(ts, "auth-1-replay", "tokenserver:v2", "1", "forward", blue, copyDB).Spec.Template,
	}
}

// TestPodDefaults: without spec.pod every container asks for CPU and memory (a
// ResourceQuota on requests admits it; it is Burstable, not BestEffort), and the
// token server's replicas spread across nodes without ever staying unscheduled.
func TestPodDefaults(t *testing.T) {
	ts := server()
	for name, tpl := range templates(ts) {
		want := JobResources
		switch name {
		case "server":
			want = ServerResources
		case "database":
			want = DatabaseResources
		}
		for _, c := range tpl.Spec.Containers {
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: container %s asks for %v: BestEffort, refused by a quota on requests", name, c.Name, c.Resources)
			}
			if !reflect.DeepEqual(c.Resources, want) {
				t.Errorf("%s: resources %v, want %v", name, c.Resources, want)
			}
		}
		if name != "server" && tpl.Spec.TopologySpreadConstraints != nil {
			t.Errorf("%s: spread %v: only the token server's replicas spread", name, tpl.Spec.TopologySpreadConstraints)
		}
	}
	server := templates(ts)["server"]
	spread := server.Spec.TopologySpreadConstraints
	if len(spread) != 1 || spread[0].TopologyKey != corev1.LabelHostname || spread[0].WhenUnsatisfiable != corev1.ScheduleAnyway ||
		spread[0].MaxSkew != 1 || !reflect.DeepEqual(spread[0].LabelSelector.MatchLabels, ServerSelector(ts, ColorBlue)) {
		t.Errorf("three replicas spread as %+v, want across kubernetes.io/hostname, ScheduleAnyway, over the color's pods", spread)
	}
	// The default spread does not depend on the replica count: scaling, and an
	// upgrade's steps, must not roll the pods.
	one := TokenServerStatefulSet(ts, Inputs{Color: ColorBlue, Image: "tokenserver:v1", Replicas: 1})
	if !reflect.DeepEqual(one.Spec.Template, *server) {
		t.Error("the pod template of one replica differs from that of three: scaling would roll the pods")
	}
	if ttl := MigrationJob(ts, "i").Spec.TTLSecondsAfterFinished; ttl != nil {
		t.Errorf("ttlSecondsAfterFinished %d without spec.jobs.ttlSecondsAfterFinished", *ttl)
	}
}

func TestPodSettings(t *testing.T) {
	// spec.pod as written, in the CRD's own types, and as a pod template carries it.
	big := resourceRequirements("1", "1Gi", "2Gi")
	bigSpec := oauthv1alpha1.ResourceRequirements{Requests: oauthv1alpha1.ResourceList(big.Requests),
		Limits: oauthv1alpha1.ResourceList(big.Limits)}
	settings := &oauthv1alpha1.PodSettings{
		Resources: &bigSpec,
		Affinity: &oauthv1alpha1.Affinity{NodeAffinity: &oauthv1alpha1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &oauthv1alpha1.NodeSelector{
				NodeSelectorTerms: []oauthv1alpha1.NodeSelectorTerm{{MatchExpressions: []oauthv1alpha1.NodeSelectorRequirement{
					{Key: "pool", Operator: corev1.NodeSelectorOpIn, Values: []string{"identity"}}}}}}},
			PodAntiAffinity: &oauthv1alpha1.PodAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []oauthv1alpha1.WeightedPodAffinityTerm{{
				Weight: 10, PodAffinityTerm: oauthv1alpha1.PodAffinityTerm{TopologyKey: corev1.LabelHostname, Namespaces: []string{"x"},
					NamespaceSelector: &oauthv1alpha1.PeerSelector{MatchExpressions: []oauthv1alpha1.PeerSelectorRequirement{
						{Key: "env", Operator: metav1.LabelSelectorOpIn, Values: []oauthv1alpha1.LabelValue{"prod"}}}},
					MatchLabelKeys: []oauthv1alpha1.LabelKey{"a"}, MismatchLabelKeys: []oauthv1alpha1.LabelKey{"b"}}}}}},
		TopologySpreadConstraints: []oauthv1alpha1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone,
			WhenUnsatisfiable: corev1.DoNotSchedule, MinDomains: ptr.To[int32](2), MatchLabelKeys: []oauthv1alpha1.LabelKey{"pod-template-hash"},
			LabelSelector: &oauthv1alpha1.PeerSelector{MatchLabels: map[string]oauthv1alpha1.LabelValue{"team": "identity"}}}},
		Tolerations: []oauthv1alpha1.Toleration{{Key: "dedicated", Operator: "Equal", Value: "identity", Effect: "NoSchedule"},
			{Operator: "Exists", Effect: "NoExecute", TolerationSeconds: ptr.To[int64](30)}},
		NodeSelector:      map[string]oauthv1alpha1.LabelValue{"kubernetes.io/os": "linux"},
		PriorityClassName: "identity-critical",
		ImagePullSecrets:  []corev1.LocalObjectReference{{Name: "registry"}},
		// The CRD refuses the operator's keys; a TokenServer that got past it (an
		// older CRD) still cannot take the pods out of their Services.
		Labels:      map[string]oauthv1alpha1.LabelValue{"team": "identity", LabelInstance: "other", LabelComponent: "x", LabelColor: "green"},
		Annotations: map[string]string{"cost-center": "42", AnnotationConfig: "forged"},
	}
	wantAffinity := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
			{Key: "pool", Operator: corev1.NodeSelectorOpIn, Values: []string{"identity"}}}}}}},
		PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 10, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: corev1.LabelHostname, Namespaces: []string{"x"},
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "env", Operator: metav1.LabelSelectorOpIn, Values: []string{"prod"}}}},
				MatchLabelKeys: []string{"a"}, MismatchLabelKeys: []string{"b"}}}}}}
	wantSpread := []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone,
		WhenUnsatisfiable: corev1.DoNotSchedule, MinDomains: ptr.To[int32](2), MatchLabelKeys: []string{"pod-template-hash"},
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "identity"}}}}
	wantTolerations := []corev1.Toleration{
		{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "identity", Effect: corev1.TaintEffectNoSchedule},
		{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)}}
	jobResources := resourceRequirements("200m", "128Mi", "512Mi")
	jobSpec := oauthv1alpha1.ResourceRequirements{Requests: oauthv1alpha1.ResourceList(jobResources.Requests),
		Limits: oauthv1alpha1.ResourceList(jobResources.Limits)}
	ts := server(func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Pod = settings
		ts.Spec.Database.Managed.Pod = &oauthv1alpha1.PodSettings{PriorityClassName: "database",
			Resources: &oauthv1alpha1.ResourceRequirements{Requests: oauthv1alpha1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")}},
			Labels:    map[string]oauthv1alpha1.LabelValue{"backup": "daily"}}
		ts.Spec.Jobs = oauthv1alpha1.JobSettings{Resources: &jobSpec, TTLSecondsAfterFinished: ptr.To[int32](600)}
	})
	plain := templates(server())
	for name, tpl := range templates(ts) {
		t.Run(name, func(t *testing.T) {
			spec := tpl.Spec
			for k, v := range plain[name].Labels {
				if tpl.Labels[k] != v {
					t.Errorf("label %s=%q, want the operator's %q", k, tpl.Labels[k], v)
				}
			}
			if name == "database" {
				if spec.PriorityClassName != "database" || tpl.Labels["backup"] != "daily" || tpl.Labels["team"] != "" ||
					spec.Tolerations != nil || spec.Containers[0].Resources.Requests.Memory().String() != "2Gi" ||
					spec.Containers[0].Resources.Limits != nil {
					t.Errorf("the database pod takes spec.database.managed.pod alone: %+v, labels %v", spec, tpl.Labels)
				}
				return
			}
			// A Job's pod takes the node affinity alone: the pod (anti-)affinity, about
			// the server's replicas, would keep it off the nodes they run on.
			affinity := wantAffinity
			if name != "server" {
				affinity = &corev1.Affinity{NodeAffinity: wantAffinity.NodeAffinity}
			}
			if !reflect.DeepEqual(spec.Affinity, affinity) || !reflect.DeepEqual(spec.Tolerations, wantTolerations) ||
				!maps.Equal(spec.NodeSelector, map[string]string{"kubernetes.io/os": "linux"}) || spec.PriorityClassName != "identity-critical" ||
				!reflect.DeepEqual(spec.ImagePullSecrets, settings.ImagePullSecrets) {
				t.Errorf("scheduling %+v, want spec.pod's", spec)
			}
			if tpl.Labels["team"] != "identity" || tpl.Annotations["cost-center"] != "42" {
				t.Errorf("labels %v, annotations %v: spec.pod's are missing", tpl.Labels, tpl.Annotations)
			}
			if tpl.Annotations[AnnotationConfig] == "forged" {
				t.Error("spec.pod's annotations overrode the operator's config hash")
			}
			want, spread := jobResources, []corev1.TopologySpreadConstraint(nil)
			if name == "server" {
				want, spread = big, wantSpread
			}
			if !reflect.DeepEqual(spec.Containers[0].Resources, want) || !reflect.DeepEqual(spec.TopologySpreadConstraints, spread) {
				t.Errorf("resources %v, spread %v; want %v, %v", spec.Containers[0].Resources, spec.TopologySpreadConstraints, want, spread)
			}
		})
	}
	sts := TokenServerStatefulSet(ts, Inputs{Color: ColorBlue, Image: "i", Replicas: 2})
	if !reflect.DeepEqual(labelsSubset(sts.Spec.Template.Labels, sts.Spec.Selector.MatchLabels), sts.Spec.Selector.MatchLabels) {
		t.Errorf("pod labels %v do not match the StatefulSet's selector %v", sts.Spec.Template.Labels, sts.Spec.Selector.MatchLabels)
	}
	if ttl := MigrationJob(ts, "i").Spec.TTLSecondsAfterFinished; ttl == nil || *ttl != 600 {
		t.Errorf("the migration Job's TTL is %v, want spec.jobs' 600", ttl)
	}
	if ttl := PlanJob(ts, "p", "i").Spec.TTLSecondsAfterFinished; ttl != nil {
		t.Error("an upgrade's Job has a TTL: the upgrade reads it until it ends")
	}
	// [] turns the default spread off.
	off := server(func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Pod = &oauthv1alpha1.PodSettings{TopologySpreadConstraints: []oauthv1alpha1.TopologySpreadConstraint{}}
	})
	if s := TokenServerStatefulSet(off, Inputs{Color: ColorBlue, Replicas: 3}).Spec.Template.Spec.TopologySpreadConstraints; len(s) != 0 {
		t.Errorf("topologySpreadConstraints: [] spreads as %v", s)
	}
}

// TestJobPodMetadata: spec.jobs.pod's labels and annotations go over spec.pod's on
// every pod that runs to completion (and the replay's, which takes spec.jobs'
// resources too), never on the token server's or the database's; without it the
// Jobs take spec.pod's as they always did.
func TestJobPodMetadata(t *testing.T) {
	meshed := &oauthv1alpha1.PodSettings{
		Labels:      oauthv1alpha1.PodLabels{"team": "identity", "sidecar.istio.io/inject": "true"},
		Annotations: oauthv1alpha1.PodAnnotations{"linkerd.io/inject": "enabled", "example.com/owner": "identity"}}
	type want struct{ labels, annotations map[string]string }
	tests := map[string]struct {
		pod            *oauthv1alpha1.PodSettings
		jobs           *oauthv1alpha1.JobPodMetadata
		server, jobPod want
	}{
		"no spec.jobs.pod: the Jobs take spec.pod's": {
			pod: meshed,
			server: want{map[string]string{"team": "identity", "sidecar.istio.io/inject": "true"},
				map[string]string{"linkerd.io/inject": "enabled", "example.com/owner": "identity"}},
			jobPod: want{map[string]string{"team": "identity", "sidecar.istio.io/inject": "true"},
				map[string]string{"linkerd.io/inject": "enabled", "example.com/owner": "identity"}},
		},
		"the Jobs' own entries win": {
			pod: meshed,
			jobs: &oauthv1alpha1.JobPodMetadata{Labels: oauthv1alpha1.PodLabels{"sidecar.istio.io/inject": "false", "kind": "batch"},
				Annotations: oauthv1alpha1.PodAnnotations{"linkerd.io/inject": "disabled"}},
			server: want{map[string]string{"team": "identity", "sidecar.istio.io/inject": "true"},
				map[string]string{"linkerd.io/inject": "enabled", "example.com/owner": "identity"}},
			jobPod: want{map[string]string{"team": "identity", "sidecar.istio.io/inject": "false", "kind": "batch"},
				map[string]string{"linkerd.io/inject": "disabled", "example.com/owner": "identity"}},
		},
		"labels only: spec.pod's annotations stay": {
			pod:  meshed,
			jobs: &oauthv1alpha1.JobPodMetadata{Labels: oauthv1alpha1.PodLabels{"sidecar.istio.io/inject": "false"}},
			server: want{map[string]string{"team": "identity", "sidecar.istio.io/inject": "true"},
				map[string]string{"linkerd.io/inject": "enabled", "example.com/owner": "identity"}},
			jobPod: want{map[string]string{"team": "identity", "sidecar.istio.io/inject": "false"},
				map[string]string{"linkerd.io/inject": "enabled", "example.com/owner": "identity"}},
		},
		"spec.jobs.pod without spec.pod": {
			jobs:   &oauthv1alpha1.JobPodMetadata{Annotations: oauthv1alpha1.PodAnnotations{"vault.hashicorp.com/agent-inject": "false"}},
			jobPod: want{annotations: map[string]string{"vault.hashicorp.com/agent-inject": "false"}},
		},
		// The CRD refuses these keys; a TokenServer that got past it (an older CRD)
		// still cannot take a Job's pods out of what the operator selects.
		"the operator's keys are ignored": {
			jobs: &oauthv1alpha1.JobPodMetadata{Labels: oauthv1alpha1.PodLabels{LabelInstance: "other", LabelComponent: "x"},
				Annotations: oauthv1alpha1.PodAnnotations{AnnotationConfig: "forged"}},
		},
	}
	plain := templates(server())
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ts := server(func(ts *oauthv1alpha1.TokenServer) {
				ts.Spec.Pod, ts.Spec.Jobs.Pod = tt.pod.DeepCopy(), tt.jobs.DeepCopy()
			})
			for what, tpl := range templates(ts) {
				w := tt.jobPod
				switch what {
				case "server":
					w = tt.server
				case "database":
					w = want{}
				}
				if got := added(tpl.Labels, plain[what].Labels); !maps.Equal(got, w.labels) {
					t.Errorf("%s: labels beside the operator's %v, want %v", what, got, w.labels)
				}
				if got := added(tpl.Annotations, plain[what].Annotations); !maps.Equal(got, w.annotations) {
					t.Errorf("%s: annotations beside the operator's %v, want %v", what, got, w.annotations)
				}
			}
			if !reflect.DeepEqual(ts.Spec.Pod, tt.pod) {
				t.Errorf("building the Jobs changed spec.pod to %+v", ts.Spec.Pod)
			}
		})
	}
}

// added: the entries of got that the operator's own template, plain, does not
// have; an entry of plain that got lacks or changed is kept under its key with
// the value got has, so that a test sees it.
func added(got, plain map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range got {
		if pv, ok := plain[k]; !ok || pv != v {
			out[k] = v
		}
	}
	for k := range plain {
		if _, ok := got[k]; !ok {
			out[k] = "<missing>"
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
