package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// PodSettings are the scheduling, resources and metadata of the pods the operator
// runs, as a cluster's policies ask of every pod (a ResourceQuota that requires
// requests, nodes kept for a team, a priority class, a private registry).
type PodSettings struct {
	// resources of the pod's container. Unset: the defaults docs/pod-settings.md
	// lists (requests, so the pods are Burstable, not BestEffort); set, they replace
	// the defaults whole: `{}` asks for none.
	// +optional
	Resources *ResourceRequirements `json:"resources,omitempty"`
	// affinity of the pods.
	// +optional
	Affinity *Affinity `json:"affinity,omitempty"`
	// topologySpreadConstraints of the pods. Unset: the token server's pods spread
	// across nodes (kubernetes.io/hostname, maxSkew 1, ScheduleAnyway); `[]` turns
	// that off.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	TopologySpreadConstraints []TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
	// tolerations of the pods.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Tolerations []Toleration `json:"tolerations,omitempty"`
	// nodeSelector of the pods: label keys and the values nodes must have.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule=`self.all(k, size(k) <= 317 && k.indexOf('/') <= 253 && k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))`,message="keys must be label keys: an optional prefix (a lowercase ^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ subdomain of at most 253 characters) and '/', then a name of 1 to 63 letters, digits, '-', '_' or '.' that begins and ends with a letter or digit"
	// +optional
	NodeSelector map[string]LabelValue `json:"nodeSelector,omitempty"`
	// priorityClassName of the pods: the name of a PriorityClass.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule=`size(self) == 0 || self.matches(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')`,message="must be a PriorityClass name (a ^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ subdomain): lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit"
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// imagePullSecrets the pods pull their images with.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	// labels added to the pods. Keys and values must be ones a pod can carry (the
	// API server would refuse the StatefulSet or Job, not the TokenServer). The
	// operator's own labels (app.kubernetes.io/name, instance, component,
	// managed-by and every oauth.kubeoauth.io/ key) select its pods, and the Job and
	// StatefulSet controllers' own (controller-uid, job-name, batch.kubernetes.io/*,
	// controller-revision-hash, statefulset.kubernetes.io/*,
	// apps.kubernetes.io/pod-index) select theirs: both are refused.
	// +optional
	Labels PodLabels `json:"labels,omitempty"`
	// annotations added to the pods. Keys must be ones a pod can carry. The
	// operator's own (oauth.kubeoauth.io/*) roll the pods when what they read
	// changes, and the Job and StatefulSet controllers' own (batch.kubernetes.io/*,
	// statefulset.kubernetes.io/*) are theirs: both are refused.
	// +optional
	Annotations PodAnnotations `json:"annotations,omitempty"`
}

// Types of their own so that spec.pod, spec.database.managed.pod and
// spec.jobs.pod refuse the same keys with the same rules, each error naming its
// own field.

// PodLabels are labels the operator adds to a pod's own.
// +kubebuilder:validation:MaxProperties=64
// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component', 'app.kubernetes.io/managed-by']) && !k.startsWith('oauth.kubeoauth.io/'))",message="must not set the operator's own labels (app.kubernetes.io/name, app.kubernetes.io/instance, app.kubernetes.io/component, app.kubernetes.io/managed-by, oauth.kubeoauth.io/*): the operator selects its pods by them"
// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['controller-uid', 'job-name', 'controller-revision-hash', 'apps.kubernetes.io/pod-index']) && !k.startsWith('batch.kubernetes.io/') && !k.startsWith('statefulset.kubernetes.io/'))",message="must not set the labels the Job and StatefulSet controllers own (controller-uid, job-name, batch.kubernetes.io/*, controller-revision-hash, statefulset.kubernetes.io/*, apps.kubernetes.io/pod-index): they select their pods by them and refuse the Job or StatefulSet"
// +kubebuilder:validation:XValidation:rule=`self.all(k, k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && k.indexOf('/') <= 253)`,message="keys must be label keys: an optional prefix (a lowercase DNS subdomain of at most 253 characters) and '/', then a name of 1 to 63 letters, digits, '-', '_' or '.' that begins and ends with a letter or digit"
type PodLabels map[string]LabelValue

// PodAnnotations are annotations the operator adds to a pod's own.
// +kubebuilder:validation:MaxProperties=64
// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('oauth.kubeoauth.io/'))",message="must not set the operator's own annotations (oauth.kubeoauth.io/*): they roll the pods when their configuration changes"
// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('batch.kubernetes.io/') && !k.startsWith('statefulset.kubernetes.io/'))",message="must not set the annotations the Job and StatefulSet controllers own (batch.kubernetes.io/*, statefulset.kubernetes.io/*)"
// +kubebuilder:validation:XValidation:rule=`self.all(k, k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && k.indexOf('/') <= 253)`,message="keys must be annotation keys: an optional prefix (a lowercase DNS subdomain of at most 253 characters) and '/', then a name of 1 to 63 letters, digits, '-', '_' or '.' that begins and ends with a letter or digit"
type PodAnnotations map[string]string

// A type of its own so that its schema has a maxLength: a CEL rule on the values of
// a map of unbounded strings costs more than the API server allows a CRD.

// LabelValue is the value of a pod label: at most 63 letters, digits, '-', '_' or
// '.', beginning and ending with a letter or digit, or empty.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:XValidation:rule=`self.matches(r'^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$')`,message="must be a label value: at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit (or empty)"
type LabelValue string

// A map's keys cannot have a type: PodLabels and PeerSelector check theirs as
// LabelKey does.

// LabelKey is a label key, such as app.kubernetes.io/name, or empty where the
// field allows (a toleration's key with operator Exists).
// +kubebuilder:validation:MaxLength=317
// +kubebuilder:validation:XValidation:rule=`size(self) == 0 || self.indexOf('/') <= 253 && self.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$')`,message="must be a label key: an optional prefix (a lowercase DNS subdomain of at most 253 characters) and '/', then a name of 1 to 63 letters, digits, '-', '_' or '.' that begins and ends with a letter or digit"
type LabelKey string

// JobSettings are what the operator's Jobs (migrations, and an upgrade's plan,
// verification, copy, cutover and cleanup) take besides spec.pod's scheduling,
// pull secrets, labels and annotations.
type JobSettings struct {
	// pod: labels and annotations of the Jobs' pods (and of a Copy upgrade's replay
	// pods), over spec.pod's: a key set in both takes the value set here, and the
	// token server's own pods never get these. For what must differ on a pod that
	// has to finish, such as sidecar.istio.io/inject: "false" when spec.pod or the
	// namespace asks for a sidecar that never exits. There is no way to drop a key
	// spec.pod sets: set it to the value that turns it off.
	// +optional
	Pod *JobPodMetadata `json:"pod,omitempty"`
	// resources of a Job's container. Unset: small defaults (docs/pod-settings.md);
	// set, they replace them whole.
	// +optional
	Resources *ResourceRequirements `json:"resources,omitempty"`
	// ttlSecondsAfterFinished: how long finished Jobs are kept, with their pods. The
	// first install's migration Job goes this long after it finished; an upgrade's
	// Jobs this long after the upgrade completed, or, after one that was rolled back,
	// refused or failed (its failed Job's logs say why), this long after the next
	// upgrade started. An upgrade's Jobs never go while it runs: it reads them.
	// +kubebuilder:default=3600
	// +kubebuilder:validation:Minimum=0
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`
}

// JobPodMetadata are the labels and annotations of the Jobs' pods, on top of
// spec.pod's; the keys refused in spec.pod are refused here.
type JobPodMetadata struct {
	// labels of the Jobs' pods, over spec.pod.labels.
	// +optional
	Labels PodLabels `json:"labels,omitempty"`
	// annotations of the Jobs' pods, over spec.pod.annotations.
	// +optional
	Annotations PodAnnotations `json:"annotations,omitempty"`
}

// The types below have the JSON shape of their corev1 namesakes, which
// internal/resources copies into the pod templates, and bounds of their own (at
// most so many items, properties and characters): so that CEL rules on them cost
// what the API server allows a CRD, and so that a TokenServer is refused, naming
// the field, for what the API server would refuse in the operator's StatefulSet or
// Job later. What the rules leave to the API server is said at each type.

// ResourceRequirements are a container's resources (corev1.ResourceRequirements).
// Left to the API server: extended resources and hugepages (whole numbers, a
// request equal to the limit, hugepages only beside cpu or memory): comparing
// every name's amounts would cost more than a CRD's rules may, as the amounts'
// strings have no maxLength.
// +kubebuilder:validation:XValidation:rule="!has(self.requests) || !has(self.limits) || ((!('cpu' in self.requests) || !('cpu' in self.limits) || quantity(string(self.requests['cpu'])).compareTo(quantity(string(self.limits['cpu']))) <= 0) && (!('memory' in self.requests) || !('memory' in self.limits) || quantity(string(self.requests['memory'])).compareTo(quantity(string(self.limits['memory']))) <= 0) && (!('ephemeral-storage' in self.requests) || !('ephemeral-storage' in self.limits) || quantity(string(self.requests['ephemeral-storage'])).compareTo(quantity(string(self.limits['ephemeral-storage']))) <= 0))",message="each request of cpu, memory or ephemeral-storage must be at most its limit"
type ResourceRequirements struct {
	// limits: the most of each resource the container may use.
	// +optional
	Limits ResourceList `json:"limits,omitempty"`
	// requests: what the container is scheduled with.
	// +optional
	Requests ResourceList `json:"requests,omitempty"`
	// claims must be empty: the operator's pods declare no resource claims, and a
	// container may use only those its pod declares.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:XValidation:rule="size(self) == 0",message="must be empty: the operator's pods declare no resource claims (spec.resourceClaims) for a container to use"
	// +optional
	Claims []corev1.ResourceClaim `json:"claims,omitempty"`
}

// ResourceList maps resource names to amounts (corev1.ResourceList), such as
// {cpu: 500m, memory: 1Gi}.
// +kubebuilder:validation:MaxProperties=16
// +kubebuilder:validation:XValidation:rule=`self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-') || (size(k) <= 317 && k.indexOf('/') <= 253 && k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$')))`,message="names must be cpu, memory, ephemeral-storage, hugepages-<size> or an extended resource with a domain prefix, such as nvidia.com/gpu"
// +kubebuilder:validation:XValidation:rule="self.all(k, type(self[k]) == int ? self[k] >= 0 : !self[k].startsWith('-'))",message="amounts must not be negative"
type ResourceList map[corev1.ResourceName]resource.Quantity

// Toleration is a toleration of the pods (corev1.Toleration).
// +kubebuilder:validation:XValidation:rule="(has(self.key) && size(self.key) > 0) || (has(self.operator) && self.operator == 'Exists')",message="an empty key needs operator Exists: only then does it tolerate every taint"
// +kubebuilder:validation:XValidation:rule="!has(self.operator) || self.operator != 'Exists' || !has(self.value) || size(self.value) == 0",fieldPath=".value",message="must be empty with operator Exists"
// +kubebuilder:validation:XValidation:rule="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",fieldPath=".tolerationSeconds",message="is only for effect NoExecute: it says how long a pod stays on a node tainted so"
type Toleration struct {
	// key of the taint tolerated; empty, with operator Exists, for every taint.
	// +optional
	Key LabelKey `json:"key,omitempty"`
	// operator: Equal (the default: the taint's value must be value) or Exists.
	// +kubebuilder:validation:MaxLength=8
	// +kubebuilder:validation:XValidation:rule="self in ['', 'Equal', 'Exists']",message="must be Equal or Exists"
	// +optional
	Operator string `json:"operator,omitempty"`
	// value of the taint, with operator Equal: a label value.
	// +optional
	Value LabelValue `json:"value,omitempty"`
	// effect tolerated: NoSchedule, PreferNoSchedule or NoExecute; empty for all.
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:XValidation:rule="self in ['', 'NoSchedule', 'PreferNoSchedule', 'NoExecute']",message="must be NoSchedule, PreferNoSchedule, NoExecute or empty (every effect)"
	// +optional
	Effect string `json:"effect,omitempty"`
	// tolerationSeconds: with effect NoExecute, how long the pod stays on a node
	// after the taint appears; unset: for ever.
	// +optional
	TolerationSeconds *int64 `json:"tolerationSeconds,omitempty"`
}

// TopologySpreadConstraint spreads the pods over a topology
// (corev1.TopologySpreadConstraint). Left to the API server: matchLabelKeys that
// are also in labelSelector.
// +kubebuilder:validation:XValidation:rule="!has(self.minDomains) || self.whenUnsatisfiable == 'DoNotSchedule'",fieldPath=".minDomains",message="is only for whenUnsatisfiable DoNotSchedule"
// +kubebuilder:validation:XValidation:rule="!has(self.matchLabelKeys) || size(self.matchLabelKeys) == 0 || has(self.labelSelector)",fieldPath=".matchLabelKeys",message="needs labelSelector"
type TopologySpreadConstraint struct {
	// maxSkew: how unevenly the pods may spread, at least 1.
	// +kubebuilder:validation:Minimum=1
	MaxSkew int32 `json:"maxSkew"`
	// topologyKey: the node label whose values are the domains, such as
	// topology.kubernetes.io/zone.
	// +kubebuilder:validation:MinLength=1
	TopologyKey LabelKey `json:"topologyKey"`
	// whenUnsatisfiable: DoNotSchedule or ScheduleAnyway.
	// +kubebuilder:validation:Enum=DoNotSchedule;ScheduleAnyway
	WhenUnsatisfiable corev1.UnsatisfiableConstraintAction `json:"whenUnsatisfiable"`
	// labelSelector of the pods counted.
	// +optional
	LabelSelector *PeerSelector `json:"labelSelector,omitempty"`
	// minDomains: with DoNotSchedule, the fewest domains counted.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MinDomains *int32 `json:"minDomains,omitempty"`
	// nodeAffinityPolicy: Honor or Ignore the pods' node affinity and selector.
	// +kubebuilder:validation:Enum=Honor;Ignore
	// +optional
	NodeAffinityPolicy *corev1.NodeInclusionPolicy `json:"nodeAffinityPolicy,omitempty"`
	// nodeTaintsPolicy: Honor or Ignore node taints.
	// +kubebuilder:validation:Enum=Honor;Ignore
	// +optional
	NodeTaintsPolicy *corev1.NodeInclusionPolicy `json:"nodeTaintsPolicy,omitempty"`
	// matchLabelKeys: pod label keys whose values select the pods counted too.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	// +kubebuilder:validation:items:MinLength=1
	MatchLabelKeys []LabelKey `json:"matchLabelKeys,omitempty"`
}

// Affinity is the pods' affinity (corev1.Affinity), with bounded lists. Left to the
// API server: matchLabelKeys and mismatchLabelKeys that are also in labelSelector.
type Affinity struct {
	// nodeAffinity: the nodes the pods may or prefer to run on.
	// +optional
	NodeAffinity *NodeAffinity `json:"nodeAffinity,omitempty"`
	// podAffinity: pods the pods run near.
	// +optional
	PodAffinity *PodAffinity `json:"podAffinity,omitempty"`
	// podAntiAffinity: pods the pods run away from.
	// +optional
	PodAntiAffinity *PodAffinity `json:"podAntiAffinity,omitempty"`
}

// NodeAffinity is corev1.NodeAffinity.
type NodeAffinity struct {
	// requiredDuringSchedulingIgnoredDuringExecution: the nodes the pods must run on.
	// +optional
	RequiredDuringSchedulingIgnoredDuringExecution *NodeSelector `json:"requiredDuringSchedulingIgnoredDuringExecution,omitempty"`
	// preferredDuringSchedulingIgnoredDuringExecution: the nodes the pods prefer.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	PreferredDuringSchedulingIgnoredDuringExecution []PreferredSchedulingTerm `json:"preferredDuringSchedulingIgnoredDuringExecution,omitempty"`
}

// NodeSelector is corev1.NodeSelector: any one of its terms.
type NodeSelector struct {
	// nodeSelectorTerms, of which a node must match one.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	NodeSelectorTerms []NodeSelectorTerm `json:"nodeSelectorTerms"`
}

// NodeSelectorTerm is corev1.NodeSelectorTerm: all of its requirements.
type NodeSelectorTerm struct {
	// matchExpressions on node labels.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	MatchExpressions []NodeSelectorRequirement `json:"matchExpressions,omitempty"`
	// matchFields on node fields: metadata.name only, In or NotIn one value.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(f, f.key == 'metadata.name' && f.operator in ['In', 'NotIn'] && has(f.values) && size(f.values) == 1)",message="each field requirement must be on metadata.name, with operator In or NotIn and one value"
	// +optional
	MatchFields []NodeSelectorRequirement `json:"matchFields,omitempty"`
}

// NodeSelectorRequirement is corev1.NodeSelectorRequirement.
// +kubebuilder:validation:XValidation:rule="self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : (self.operator in ['Gt', 'Lt'] ? has(self.values) && size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$') : !has(self.values) || size(self.values) == 0)",message="values must be set for In and NotIn, one integer for Gt and Lt, and empty for Exists and DoesNotExist"
type NodeSelectorRequirement struct {
	// key of the node label (or field).
	// +kubebuilder:validation:MinLength=1
	Key LabelKey `json:"key"`
	// operator: In, NotIn, Exists, DoesNotExist, Gt or Lt.
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist;Gt;Lt
	Operator corev1.NodeSelectorOperator `json:"operator"`
	// values the label may (In), may not (NotIn) have, or one integer it must be
	// greater (Gt) or less (Lt) than; for matchFields, node names (up to 253
	// characters: a longer label value simply matches no node).
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +optional
	Values []string `json:"values,omitempty"`
}

// PreferredSchedulingTerm is corev1.PreferredSchedulingTerm.
type PreferredSchedulingTerm struct {
	// weight of the term, from 1 to 100.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Weight int32 `json:"weight"`
	// preference: the nodes preferred.
	Preference NodeSelectorTerm `json:"preference"`
}

// PodAffinity is corev1.PodAffinity and corev1.PodAntiAffinity, which have the same
// fields.
type PodAffinity struct {
	// requiredDuringSchedulingIgnoredDuringExecution: terms every one of which must hold.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	RequiredDuringSchedulingIgnoredDuringExecution []PodAffinityTerm `json:"requiredDuringSchedulingIgnoredDuringExecution,omitempty"`
	// preferredDuringSchedulingIgnoredDuringExecution: terms preferred, by weight.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	PreferredDuringSchedulingIgnoredDuringExecution []WeightedPodAffinityTerm `json:"preferredDuringSchedulingIgnoredDuringExecution,omitempty"`
}

// PodAffinityTerm is corev1.PodAffinityTerm.
type PodAffinityTerm struct {
	// labelSelector of the other pods.
	// +optional
	LabelSelector *PeerSelector `json:"labelSelector,omitempty"`
	// namespaces of the other pods; with namespaceSelector unset and this empty, the
	// pod's own.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:XValidation:rule=`self.matches(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')`,message="must be a namespace name: lowercase letters, digits and '-', beginning and ending with a letter or digit"
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
	// topologyKey: the node label whose values are the domains, such as
	// kubernetes.io/hostname.
	// +kubebuilder:validation:MinLength=1
	TopologyKey LabelKey `json:"topologyKey"`
	// namespaceSelector of the other pods' namespaces.
	// +optional
	NamespaceSelector *PeerSelector `json:"namespaceSelector,omitempty"`
	// matchLabelKeys: pod label keys whose values select the other pods too.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	// +kubebuilder:validation:items:MinLength=1
	MatchLabelKeys []LabelKey `json:"matchLabelKeys,omitempty"`
	// mismatchLabelKeys: pod label keys whose values the other pods must not share.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	// +kubebuilder:validation:items:MinLength=1
	MismatchLabelKeys []LabelKey `json:"mismatchLabelKeys,omitempty"`
}

// WeightedPodAffinityTerm is corev1.WeightedPodAffinityTerm.
type WeightedPodAffinityTerm struct {
	// weight of the term, from 1 to 100.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Weight int32 `json:"weight"`
	// podAffinityTerm: the term.
	PodAffinityTerm PodAffinityTerm `json:"podAffinityTerm"`
}
