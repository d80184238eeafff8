// Package netguard keeps outbound HTTP requests whose URL a tenant or a TokenServer
// author chooses (an external admin URL, a client's jwks_uri) away from the
// cluster's own network: loopback, link-local (cloud metadata), private and other
// internal addresses are refused at dial time, after DNS resolution, so a name that
// resolves to a public address once and to 169.254.169.254 the next time (DNS
// rebinding) is refused too.
package netguard
