package v1alpha1

import "time"

// Condition types shared by the three kinds. Reasons live beside the controllers that
// set them (but for the upgrade's, in upgrade_constants.go); the types are API because
// users and tools (kstatus, Argo CD) read them.
const (
	// ConditionReady is True when the object does what its spec asks.
	ConditionReady = "Ready"
	// ConditionProgressing is True while a TokenServer is being created or upgraded.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when a TokenServer serves but something failed, such
	// as an upgrade that was rolled back.
	ConditionDegraded = "Degraded"
	// ConditionReconciling is True while the operator is still at a generation: waiting
	// for something that comes without a human (a TokenServer to be Ready, pods to
	// roll), or retrying a failure with backoff. Absent otherwise. kstatus (Flux, kpt)
	// reads it as InProgress.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when the operator cannot go on until a human changes
	// something (a spec, a Secret, a namespace policy): kstatus reads Failed. Absent
	// otherwise.
	ConditionStalled = "Stalled"
)

// Labels the operator sets.
const (
	// LabelSource says where a ConsentGrant came from: SourceDeclared (written by a
	// person or a GitOps pipeline) or SourceMirrored (copied from a consent a user gave
	// in the browser).
	LabelSource = "oauth.kubeoauth.io/source"
	// SourceDeclared marks a ConsentGrant written by a person or pipeline.
	SourceDeclared = "declared"
	// SourceMirrored marks a ConsentGrant the operator mirrored from the token server.
	SourceMirrored = "mirrored"
)

// Duration is a positive Go duration such as "30s", "15m" or "720h".
//
// It is a string type of our own, rather than metav1.Duration, so that its validation
// is written once here and applies to every field of this type.
//
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')",message="must be a duration such as 30s, 15m or 720h (units: ns, us, ms, s, m, h)"
// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) > duration('0s')",message="must be greater than zero"
type Duration string

// Parse returns the duration. Admission has already checked the format, so an error
// here means the object bypassed validation.
func (d Duration) Parse() (time.Duration, error) {
	return time.ParseDuration(string(d))
}

// URL is an absolute URL a browser or a client will be sent to or fetch: https, or
// plain http for the loopback host only (RFC 8252 §7.3 for native apps), never with a
// fragment (RFC 6749 §3.1.2).
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=2048
// +kubebuilder:validation:XValidation:rule="isURL(self) && size(url(self).getScheme()) > 0 && size(url(self).getHostname()) > 0",message="must be an absolute URL with a scheme and a host, such as https://app.example.com/callback"
// +kubebuilder:validation:XValidation:rule="!isURL(self) || url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && url(self).getHostname() in ['localhost', '127.0.0.1', '::1'])",message="must use https; plain http is allowed only for localhost, 127.0.0.1 and [::1]"
// +kubebuilder:validation:XValidation:rule="!self.contains('#')",message="must not contain a fragment (#...)"
type URL string

// Scope is an OAuth 2.0 scope token (RFC 6749 §3.3): printable ASCII without spaces,
// double quotes or backslashes.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=128
// +kubebuilder:validation:XValidation:rule=`self.matches(r'^[\x21\x23-\x5B\x5D-\x7E]+$')`,message="must be a scope token (RFC 6749 section 3.3): printable ASCII with no spaces, double quotes or backslashes"
type Scope string

// SecretKeyReference names a key in a Secret in the referring object's namespace.
type SecretKeyReference struct {
	// name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// key in the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// LocalObjectReference names an object in the referring object's namespace.
type LocalObjectReference struct {
	// name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}
