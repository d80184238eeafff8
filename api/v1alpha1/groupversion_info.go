// Package v1alpha1 holds the kubeoauth API: TokenServer, OAuthClient and ConsentGrant in
// the oauth.kubeoauth.io group. It declares the types, their defaults and their
// admission-time validation (OpenAPI and CEL); nothing here talks to a cluster.
//
// +kubebuilder:object:generate=true
// +groupName=oauth.kubeoauth.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "oauth.kubeoauth.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&TokenServer{}, &TokenServerList{},
		&OAuthClient{}, &OAuthClientList{},
		&ConsentGrant{}, &ConsentGrantList{},
	)
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
