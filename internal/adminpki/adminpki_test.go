package adminpki

import (
	"strings"
	"testing"
	"time"
)

func TestReissue(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	names := []string{"auth-admin.platform.svc", "auth-admin.platform.svc.cluster.local"}
	ca, caKey, err := NewCA("auth", now)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, otherKey, _ := NewCA("impostor", now)
	cert, key, err := IssueServing(ca, caKey, names, now)
	if err != nil {
		t.Fatal(err)
	}
	foreign, foreignKey, _ := IssueServing(otherCA, otherKey, names, now)
	_, strayKey, _ := IssueServing(ca, caKey, names, now)
	tests := map[string]struct {
		cert, key []byte
		names     []string
		at        time.Time
		want      string
	}{
		"fresh":                       {cert: cert, key: key, names: names, at: now},
		"two thirds through its life": {cert: cert, key: key, names: names, at: now.Add(LeafLifetime * 2 / 3).Add(2 * time.Hour), want: "expires"},
		"issued by another CA":        {cert: foreign, key: foreignKey, names: names, at: now, want: "does not verify"},
		"names changed":               {cert: cert, key: key, names: []string{names[0], "auth-admin"}, at: now, want: "names"},
		"key of another certificate":  {cert: cert, key: strayKey, names: names, at: now, want: "does not parse"},
		"garbage":                     {cert: []byte("x"), key: key, names: names, at: now, want: "does not parse"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Reissue(tc.cert, tc.key, ca, tc.names, tc.at)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("Reissue = %q, want %q", got, tc.want)
			}
		})
	}
	if !ValidCA(ca, caKey, now) || ValidCA(ca, otherKey, now) || ValidCA(ca, caKey, now.Add(CALifetime-LeafLifetime/2)) {
		t.Error("ValidCA: want a matching, long-lived CA only")
	}
}
