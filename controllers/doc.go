// Package controllers holds kubeoauth's reconcilers, one per kind: OAuthClient,
// ConsentGrant and TokenServer. Each Reconcile runs one skeleton (reconcile.go: begin,
// the phases, finish, which patches status once); the decisions they make live in pure
// packages under internal/.
//
// The RBAC markers below generate config/rbac/role.yaml (`make manifests`).
package controllers

// +kubebuilder:rbac:groups=oauth.kubeoauth.io,resources=tokenservers;oauthclients;consentgrants,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=oauth.kubeoauth.io,resources=tokenservers/status;oauthclients/status;consentgrants/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=oauth.kubeoauth.io,resources=tokenservers/finalizers;oauthclients/finalizers;consentgrants/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
