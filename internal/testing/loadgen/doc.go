// Package loadgen is the load generator of the end-to-end upgrade tests. It keeps
// traffic on a token server — client_credentials on new and on keep-alive
// connections, refresh chains, introspections, revocations, consent grants created
// and deleted — and a ledger of every request and of what each one established
// (this token was issued, that one revoked, this grant deleted). When the load
// stops, Check verifies the ledger against the server through its public endpoints
// only, so an upgrade that loses a token, a chain or a revocation, or fails a
// request, shows up as a figure that should have been zero.
package loadgen
