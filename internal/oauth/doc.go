// Package oauth is kubeoauth's one window onto github.com/ory/fosite: it composes the
// OAuth 2.0 / OpenID Connect provider (authorization code with PKCE, client
// credentials, refresh, introspection, revocation, ID tokens) and its session type;
// the signing keys it signs with are internal/signingkey's. The HTTP server (internal/tokenserver) uses fosite only through
// what this package returns. internal/store/postgres also imports fosite, because it
// implements fosite's storage interfaces.
package oauth
