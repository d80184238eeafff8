package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// ConsentGrantSpec says: subject allowed client these scopes.
type ConsentGrantSpec struct {
	// clientRef is the OAuthClient, in this namespace, the consent is for. It cannot
	// change.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="clientRef cannot change after creation: delete this grant and create another"
	ClientRef LocalObjectReference `json:"clientRef"`

	// subject is the user who consents, as the token server names them (the `sub`
	// claim). It cannot change.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule=`!self.contains('\u0000')`,message="must not contain a NUL character (\\u0000): the token server keeps it in PostgreSQL, which cannot store one"
	// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..'",message="must not be . or ..: no user is named so, and the admin API's path to the grant cannot carry it"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="subject cannot change after creation: delete this grant and create another"
	Subject string `json:"subject"`

	// scopes granted.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Scopes []Scope `json:"scopes"`

	// expiresAt ends the grant; unset: it lasts until deleted.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
}

// ConsentGrantStatus is the observed state of a ConsentGrant.
type ConsentGrantStatus struct {
	// conditions: Ready; Reconciling while the operator is still at it, Stalled when only a person can move it on (see docs/operator.md#conditions).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// clientID the grant is for, recorded when it was put on the token server.
	// +optional
	ClientID string `json:"clientID,omitempty"`
	// serverRef is the TokenServer the grant was put on, recorded with clientID: the
	// grant is revoked there on deletion even when its OAuthClient is gone.
	// +optional
	ServerRef *ServerReference `json:"serverRef,omitempty"`
	// grantedAt is when the subject consented.
	// +optional
	GrantedAt *metav1.Time `json:"grantedAt,omitempty"`
	// lastUsedAt is when a token was last issued under the grant.
	// +optional
	LastUsedAt *metav1.Time `json:"lastUsedAt,omitempty"`
	// activeTokens issued under the grant and not yet expired or revoked.
	// +optional
	ActiveTokens int32 `json:"activeTokens,omitempty"`
}

// ConsentGrant records that a subject allowed an OAuthClient some scopes: declared in
// git (pre-approved) or mirrored from a consent given in the browser (label
// oauth.kubeoauth.io/source). Deleting it revokes the consent and every token issued
// under it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cg,categories=kubeoauth;oauth
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Client",type=string,JSONPath=`.spec.clientRef.name`
// +kubebuilder:printcolumn:name="Subject",type=string,JSONPath=`.spec.subject`
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.metadata.labels.oauth\.kubeoauth\.io/source`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.spec.expiresAt`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ConsentGrant struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ConsentGrantSpec   `json:"spec"`
	Status ConsentGrantStatus `json:"status,omitzero"`
}

// ConsentGrantList is a list of ConsentGrants.
//
// +kubebuilder:object:root=true
type ConsentGrantList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ConsentGrant `json:"items"`
}
