// Package manifests tests the deployable manifests under config/: that kustomize renders
// config/default (what `make deploy` applies) and that a real kube-apiserver accepts
// every object in it.
package manifests
