// Package netsvc gives the local cluster the two Service features a real cluster gets
// from CoreDNS and kube-proxy, which the local cluster does not run: cluster DNS
// (ServeDNS) for pods, and a way for the host to reach a Service (PortForward).
//
// Both read Services and EndpointSlices through informers and follow endpoint readiness,
// as the real components do, but implement only what the local cluster's workloads use.
// It is a development and test tool, not a production DNS server or proxy.
package netsvc
