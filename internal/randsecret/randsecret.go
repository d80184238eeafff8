// Package randsecret makes the random strings the operator and its tools hand out:
// client secrets, admin tokens, HMAC keys, database passwords.
package randsecret

import (
	"crypto/rand"
	"encoding/base64"
)

// New is n random bytes, base64url without padding (32 bytes: 43 characters,
// 256 bits).
//
// crypto/rand.Text exists but yields 26 base32 characters (128 bits); the HMAC
// key and client secrets want 256 bits and the stored ones are base64url already.
func New(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// MustNew is New for tools and tests, where a broken random source ends the
// program.
func MustNew(n int) string {
	s, err := New(n)
	if err != nil {
		panic(err)
	}
	return s
}
