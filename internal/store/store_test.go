package store_test

import (
	"bytes"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/testing/boundary"
)

func TestSecretHasher(t *testing.T) {
	key := bytes.Repeat([]byte("k"), 32)
	h, err := store.NewSecretHasher(key)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := store.NewSecretHasher(bytes.Repeat([]byte("o"), 32))
	const secret = "a-secret-a-person-chose-0123456789"
	keyed := h.Hash(secret)
	tests := map[string]struct {
		hasher *store.SecretHasher
		hash   []byte
		secret string
		want   bool
	}{
		"keyed hash, right secret":         {h, keyed, secret, true},
		"keyed hash, wrong secret":         {h, keyed, secret + "x", false},
		"keyed hash, another server's key": {other, keyed, secret, false},
		"legacy SHA-256 still accepted":    {h, store.LegacyHashSecret(secret), secret, true},
		"legacy SHA-256, wrong secret":     {h, store.LegacyHashSecret(secret), secret + "x", false},
		"no hash":                          {h, nil, secret, false},
		"truncated keyed hash":             {h, keyed[:len(keyed)-1], secret, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tt.hasher.Verify(tt.hash, tt.secret); got != tt.want {
				t.Errorf("Verify = %v, want %v", got, tt.want)
			}
		})
	}
	if bytes.Equal(keyed, store.LegacyHashSecret(secret)) || bytes.Contains(keyed, store.LegacyHashSecret(secret)) {
		t.Error("the keyed hash contains the unkeyed SHA-256 of the secret")
	}
	if !bytes.Equal(h.Hash(secret), keyed) {
		t.Error("hashing is not deterministic: an identical PUT would look like a change")
	}
	if _, err := store.NewSecretHasher([]byte("short")); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

// The store's types are the schema's, apart from the admin API's wire types (converted
// in internal/tokenserver) and from any database or fosite, so that each can change
// without the others.
func TestStoreStandsAlone(t *testing.T) {
	boundary.Forbid(t, true,
		"github.com/kubeoauth/kubeoauth/internal/adminapi",
		"github.com/ory/fosite",
		"github.com/lib/pq",
	)
}
