// Package adminpki issues the TLS certificates of a bundled token server's admin
// API: a CA of the operator's per TokenServer, and a serving certificate for the
// admin Service's DNS names signed by it. The operator trusts only that CA for that
// server, so a pod that merely claims the admin Service's address gets no token.
//
// It is our own small code on crypto/x509, not cert-manager: the operator must work
// on a cluster without cert-manager, and it needs one CA and one leaf per server,
// renewed on a schedule, which is what this does and all it does.
package adminpki
