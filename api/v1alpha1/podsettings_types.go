package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
)

// PodSettings are the scheduling, resources and metadata of the pods the operator
// runs, as a cluster's policies ask of every pod (a ResourceQuota that requires
// requests, nodes kept for a team, a priority class, a private registry).
type PodSettings struct {
	// resources of the pod's container. Unset: the defaults docs/pod-settings.md
	// lists (requests, so the pods are Burstable, not BestEffort); set, they replace
	// the defaults whole: `{}` asks for none.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// affinity of the pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// topologySpreadConstraints of the pods. Unset: the token server's pods spread
	// across nodes (kubernetes.io/hostname, maxSkew 1, ScheduleAnyway); `[]` turns
	// that off.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
	// tolerations of the pods.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// nodeSelector of the pods.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// priorityClassName of the pods.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// imagePullSecrets the pods pull their images with.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	// labels added to the pods. The operator's own labels (app.kubernetes.io/name,
	// instance, component, managed-by and every oauth.kubeoauth.io/ key) select its
	// pods and are refused.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component', 'app.kubernetes.io/managed-by']) && !k.startsWith('oauth.kubeoauth.io/'))",message="must not set the operator's own labels (app.kubernetes.io/name, app.kubernetes.io/instance, app.kubernetes.io/component, app.kubernetes.io/managed-by, oauth.kubeoauth.io/*): the operator selects its pods by them"
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// annotations added to the pods. The operator's own (oauth.kubeoauth.io/*) roll
	// the pods when what they read changes and are refused.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('oauth.kubeoauth.io/'))",message="must not set the operator's own annotations (oauth.kubeoauth.io/*): they roll the pods when their configuration changes"
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// JobSettings are what the operator's Jobs (migrations, and an upgrade's plan,
// verification, copy, cutover and cleanup) take besides spec.pod's scheduling,
// pull secrets, labels and annotations.
type JobSettings struct {
	// resources of a Job's container. Unset: small defaults (docs/pod-settings.md);
	// set, they replace them whole.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
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
