// Package resources builds the Kubernetes objects of a bundled TokenServer: its
// PostgreSQL, Secrets, migrations Job, StatefulSet, Services and PodDisruptionBudget.
// The builders are pure, so every branch is table-tested without an API server; the
// TokenServer reconciler generates the secrets, sets owners and applies the objects.
package resources
