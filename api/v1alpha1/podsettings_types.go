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
