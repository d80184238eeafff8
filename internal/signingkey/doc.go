// Package signingkey generates, parses and publishes the token server's signing keys
// (EC P-256 for ES256, RSA for RS256). It is apart from internal/oauth so that the
// operator, which only makes and checks keys for a TokenServer's Secret, does not link
// fosite.
package signingkey
