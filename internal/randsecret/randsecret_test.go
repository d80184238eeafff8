package randsecret_test

import (
	"encoding/base64"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/randsecret"
)

func TestNewIsBase64URLOfNBytesAndDiffers(t *testing.T) {
	a, err := randsecret.New(32)
	if err != nil {
		t.Fatal(err)
	}
	b := randsecret.MustNew(32)
	if len(a) != 43 || a == b {
		t.Fatalf("two secrets: %q, %q: want 43 characters each, different", a, b)
	}
	raw, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil || len(raw) != 32 {
		t.Fatalf("%q decodes to %d bytes (%v), want 32", a, len(raw), err)
	}
}
