package resources

import (
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// Default resources, when the TokenServer sets none: requests, so that a namespace
// whose ResourceQuota counts requests.cpu or requests.memory (or a policy that
// requires them) admits the pods, and a memory limit, so that a leak is the pod's
// problem and not its node's. No CPU limit: throttling a token server under a burst
// only makes its latency worse, and the request already places it.
var (
	// ServerResources: the token server holds no state; it needs memory for its
	// connection pool and the requests in flight.
	ServerResources = resourceRequirements("100m", "128Mi", "256Mi")
	// DatabaseResources: PostgreSQL's default shared_buffers (128 MB) plus its backends.
	DatabaseResources = resourceRequirements("100m", "256Mi", "512Mi")
	// JobResources: migrations, plans and cleanups are short; a copy streams rows in
	// batches, hence the higher memory limit.
	JobResources = resourceRequirements("50m", "64Mi", "256Mi")
)

func resourceRequirements(cpu, memory, memoryLimit string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(memoryLimit)},
	}
}

// spreadAcrossNodes is the token server's default topology spread: its pods of one
// color on different nodes where the scheduler can, on one node where it cannot
// (ScheduleAnyway: a one-node cluster still runs every replica). It is there for
// every replica count, inert for one pod: a constraint added only from two
// replicas on would change the pod template, and roll the pods, on every scale
// between one and two, and at every step of an upgrade that scales a color.
func spreadAcrossNodes(selector map[string]string) []corev1.TopologySpreadConstraint {
	return []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
		WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: selector}}}
}

// withPodSettings applies p to the pod template tpl: def are the resources of its
// containers unless p sets them, spread its topology spread unless p sets one. The
// template's own labels and annotations win over p's (the CRD refuses those keys
// anyway): the operator's selectors and rollout annotations are never overridden.
func withPodSettings(tpl *corev1.PodTemplateSpec, p *oauthv1alpha1.PodSettings, def corev1.ResourceRequirements,
	spread []corev1.TopologySpreadConstraint) {
	if p == nil {
		p = &oauthv1alpha1.PodSettings{}
	}
	if p.Resources != nil {
		def = coreResources(p.Resources)
	}
	for i := range tpl.Spec.Containers {
		tpl.Spec.Containers[i].Resources = *def.DeepCopy()
	}
	if p.TopologySpreadConstraints != nil {
		spread = topologySpread(p.TopologySpreadConstraints)
	}
	p = p.DeepCopy()
	tpl.Spec.TopologySpreadConstraints = spread
	tpl.Spec.Affinity, tpl.Spec.Tolerations = affinity(p.Affinity), tolerations(p.Tolerations)
	tpl.Spec.NodeSelector = stringMap(p.NodeSelector)
	tpl.Spec.PriorityClassName, tpl.Spec.ImagePullSecrets = p.PriorityClassName, p.ImagePullSecrets
	tpl.Labels = under(p.Labels, tpl.Labels)
	tpl.Annotations = under(p.Annotations, tpl.Annotations)
}

// under is extra with own over it, without extra's keys in the operator's own
// prefix (oauth.kubeoauth.io/) or its app.kubernetes.io labels; nil when both are
// empty, so that a template without either stays as it was built.
func under[V ~string](extra map[string]V, own map[string]string) map[string]string {
	if len(extra) == 0 {
		return own
	}
	out := make(map[string]string, len(extra)+len(own))
	for k, v := range extra {
		if !reservedKey(k) {
			out[k] = string(v)
		}
	}
	for k, v := range own {
		out[k] = v
	}
	return out
}

// reservedKey: the keys PodSettings' CEL rules refuse in labels and annotations.
func reservedKey(k string) bool {
	switch k {
	case LabelName, LabelInstance, LabelComponent, LabelManagedBy:
		return true
	}
	return strings.HasPrefix(k, oauthv1alpha1.GroupVersion.Group+"/")
}

// jobPod applies spec.pod's scheduling, pull secrets, labels and annotations and
// spec.jobs' resources to a Job's (or the replay's) pod template: the token
// server's image runs there too, on the nodes the TokenServer is allowed. Not
// spec.pod's topology spread nor its pod affinity and anti-affinity, which are
// about the server's replicas (their node affinity is kept): a Job's pod carries
// the server's labels, so "one server per node" copied onto it would keep the
// upgrade's Jobs off every node a server runs on, and an upgrade, when both
// colors run, off all of them. spec.jobs.pod's labels and annotations go over
// spec.pod's: a pod that must finish cannot carry a sidecar that never exits,
// which spec.pod may well ask the server's pods for.
func jobPod(ts *oauthv1alpha1.TokenServer, tpl *corev1.PodTemplateSpec) {
	p := ts.Spec.Pod.DeepCopy()
	if p == nil {
		p = &oauthv1alpha1.PodSettings{}
	}
	p.Resources, p.TopologySpreadConstraints = ts.Spec.Jobs.Resources, nil
	if a := p.Affinity; a != nil {
		a.PodAffinity, a.PodAntiAffinity = nil, nil
		if a.NodeAffinity == nil {
			p.Affinity = nil
		}
	}
	if m := ts.Spec.Jobs.Pod; m != nil {
		p.Labels, p.Annotations = over(p.Labels, m.Labels), over(p.Annotations, m.Annotations)
	}
	withPodSettings(tpl, p, JobResources, nil)
}

// over is base with top's entries over it; base itself is left as it was.
func over[M ~map[string]V, V any](base, top M) M {
	if len(top) == 0 {
		return base
	}
	out := maps.Clone(base)
	if out == nil {
		out = make(M, len(top))
	}
	maps.Copy(out, top)
	return out
}
