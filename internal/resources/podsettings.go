package resources

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// The pod settings' types have the JSON shape of their corev1 namesakes, with
// bounds of their own so that the CRD's rules can check them (see
// api/v1alpha1/podsettings_types.go); these copy them into a pod template, field for
// field. A nil list or map stays nil and an empty one empty: for the topology
// spread, `[]` means none where nil means the default.

func coreResources(r *oauthv1alpha1.ResourceRequirements) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Limits: resourceList(r.Limits), Requests: resourceList(r.Requests), Claims: slices.Clone(r.Claims)}
}

func resourceList(l oauthv1alpha1.ResourceList) corev1.ResourceList {
	if l == nil {
		return nil
	}
	out := make(corev1.ResourceList, len(l))
	for k, v := range l {
		out[k] = v.DeepCopy()
	}
	return out
}

func stringMap[V ~string](m map[string]V) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func tolerations(ts []oauthv1alpha1.Toleration) []corev1.Toleration {
	if ts == nil {
		return nil
	}
	out := make([]corev1.Toleration, 0, len(ts))
	for _, t := range ts {
		out = append(out, corev1.Toleration{Key: string(t.Key), Operator: corev1.TolerationOperator(t.Operator), Value: string(t.Value),
			Effect:            corev1.TaintEffect(t.Effect),
			TolerationSeconds: t.TolerationSeconds})
	}
	return out
}

func topologySpread(cs []oauthv1alpha1.TopologySpreadConstraint) []corev1.TopologySpreadConstraint {
	if cs == nil {
		return nil
	}
	out := make([]corev1.TopologySpreadConstraint, 0, len(cs))
	for _, c := range cs {
		out = append(out, corev1.TopologySpreadConstraint{MaxSkew: c.MaxSkew, TopologyKey: string(c.TopologyKey),
			WhenUnsatisfiable: c.WhenUnsatisfiable, LabelSelector: labelSelector(c.LabelSelector), MinDomains: c.MinDomains,
			NodeAffinityPolicy: c.NodeAffinityPolicy, NodeTaintsPolicy: c.NodeTaintsPolicy, MatchLabelKeys: strs(c.MatchLabelKeys)})
	}
	return out
}

// labelSelector is s as metav1 has it; nil for nil.
func labelSelector(s *oauthv1alpha1.PeerSelector) *metav1.LabelSelector {
	if s == nil {
		return nil
	}
	out := &metav1.LabelSelector{}
	if s.MatchLabels != nil {
		out.MatchLabels = stringMap(s.MatchLabels)
	}
	for _, r := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, metav1.LabelSelectorRequirement{Key: string(r.Key),
			Operator: r.Operator, Values: strs(r.Values)})
	}
	return out
}

func affinity(a *oauthv1alpha1.Affinity) *corev1.Affinity {
	if a == nil {
		return nil
	}
	out := &corev1.Affinity{}
	if n := a.NodeAffinity; n != nil {
		out.NodeAffinity = &corev1.NodeAffinity{}
		if r := n.RequiredDuringSchedulingIgnoredDuringExecution; r != nil {
			out.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{
				NodeSelectorTerms: convert(r.NodeSelectorTerms, nodeSelectorTerm)}
		}
		out.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution = convert(n.PreferredDuringSchedulingIgnoredDuringExecution,
			func(p oauthv1alpha1.PreferredSchedulingTerm) corev1.PreferredSchedulingTerm {
				return corev1.PreferredSchedulingTerm{Weight: p.Weight, Preference: nodeSelectorTerm(p.Preference)}
			})
	}
	if p := a.PodAffinity; p != nil {
		out.PodAffinity = &corev1.PodAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution:  convert(p.RequiredDuringSchedulingIgnoredDuringExecution, podAffinityTerm),
			PreferredDuringSchedulingIgnoredDuringExecution: convert(p.PreferredDuringSchedulingIgnoredDuringExecution, weightedPodAffinityTerm)}
	}
	if p := a.PodAntiAffinity; p != nil {
		out.PodAntiAffinity = &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution:  convert(p.RequiredDuringSchedulingIgnoredDuringExecution, podAffinityTerm),
			PreferredDuringSchedulingIgnoredDuringExecution: convert(p.PreferredDuringSchedulingIgnoredDuringExecution, weightedPodAffinityTerm)}
	}
	return out
}

func nodeSelectorTerm(t oauthv1alpha1.NodeSelectorTerm) corev1.NodeSelectorTerm {
	req := func(r oauthv1alpha1.NodeSelectorRequirement) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: string(r.Key), Operator: r.Operator, Values: slices.Clone(r.Values)}
	}
	return corev1.NodeSelectorTerm{MatchExpressions: convert(t.MatchExpressions, req), MatchFields: convert(t.MatchFields, req)}
}

func podAffinityTerm(t oauthv1alpha1.PodAffinityTerm) corev1.PodAffinityTerm {
	return corev1.PodAffinityTerm{LabelSelector: labelSelector(t.LabelSelector), Namespaces: slices.Clone(t.Namespaces),
		TopologyKey: string(t.TopologyKey), NamespaceSelector: labelSelector(t.NamespaceSelector),
		MatchLabelKeys: strs(t.MatchLabelKeys), MismatchLabelKeys: strs(t.MismatchLabelKeys)}
}

func weightedPodAffinityTerm(t oauthv1alpha1.WeightedPodAffinityTerm) corev1.WeightedPodAffinityTerm {
	return corev1.WeightedPodAffinityTerm{Weight: t.Weight, PodAffinityTerm: podAffinityTerm(t.PodAffinityTerm)}
}

// strs is in as strings; nil for nil.
func strs[V ~string](in []V) []string { return convert(in, func(v V) string { return string(v) }) }

// convert is f of each of in; nil for nil.
func convert[T, U any](in []T, f func(T) U) []U {
	if in == nil {
		return nil
	}
	out := make([]U, 0, len(in))
	for _, v := range in {
		out = append(out, f(v))
	}
	return out
}
