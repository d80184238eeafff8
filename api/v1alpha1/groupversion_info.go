// Package v1alpha1 holds the kubeoauth API: TokenServer, OAuthClient and ConsentGrant in
// the oauth.kubeoauth.io group. It declares the types, their defaults and their
// admission-time validation (OpenAPI and CEL); nothing here talks to a cluster.
//
// +kubebuilder:object:generate=true
// +groupName=oauth.kubeoauth.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "oauth.kubeoauth.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
