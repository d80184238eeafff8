package signingkey

import (
	"os"
	"path/filepath"
	"testing"
)

// After a rotation JWKS publishes the new key first and the previous one after it,
// public halves only, each under its thumbprint.
func TestKeysRotation(t *testing.T) {
	dir := t.TempDir()
	for name, alg := range map[string]string{"current.pem": RS256, "previous.pem": ES256} {
		pem, err := Generate(alg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), pem, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := Load(filepath.Join(dir, "current.pem"), filepath.Join(dir, "previous.pem"))
	if err != nil {
		t.Fatal(err)
	}
	set := ks.JWKS()
	if len(set.Keys) != 2 || set.Keys[0].KeyID != ks.Current.ID || set.Keys[1].KeyID != ks.Previous.ID ||
		set.Keys[0].Algorithm != RS256 || set.Keys[1].Algorithm != ES256 {
		t.Fatalf("JWKS = %+v; want the RS256 current key, then the ES256 previous one", set.Keys)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Errorf("JWKS publishes a private key (%s)", k.KeyID)
		}
	}
	if ks.Current.ID == ks.Previous.ID {
		t.Error("two different keys share a key ID")
	}
}

func TestParseKeyRefusesWeakOrUnknownKeys(t *testing.T) {
	tests := map[string]string{
		"not PEM": "hello",
		"garbage": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(in)); err == nil {
				t.Errorf("Parse(%q) accepted it", in)
			}
		})
	}
	if _, err := Generate("HS256"); err == nil {
		t.Error("Generate(HS256) should refuse: symmetric keys cannot be published in JWKS")
	}
}
