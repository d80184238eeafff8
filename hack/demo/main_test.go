package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
)

// The demo is the README's first command: it must run, and what it shows must be true —
// kubectl prints the printer columns and the samples, and the bad client is refused
// with messages naming its fields.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		`NAME\s+READY\s+CLIENT ID\s+SERVER\s+SECRET\s+AGE`,
		`oauthclient.oauth.kubeoauth.io/grafana\s+auth`,
		`NAME\s+READY\s+CLIENT\s+SUBJECT\s+SOURCE\s+EXPIRES\s+AGE`,
		`consentgrant.oauth.kubeoauth.io/grafana-alice\s+grafana\s+alice\s+2027-01-01T00:00:00Z`,
		`NAME\s+READY\s+ISSUER\s+IMAGE\s+SERVING\s+ACTIVE\s+UPGRADE\s+AGE`,
		`tokenserver.oauth.kubeoauth.io/auth\s+https://auth.example.com\s+ghcr.io/kubeoauth/tokenserver:v0.1.0`,
		`client_secret_basic 24h Delete`,
		`spec.grantTypes: Invalid value: grantTypes cannot include client_credentials when tokenEndpointAuthMethod is none`,
		`spec.logoURI: Invalid value: "ftp://sloppy.example.com/logo.png": must use https`,
		`spec.redirectURIs\[0\]: Invalid value: "http://sloppy.example.com/callback": must use https`,
	} {
		if !regexp.MustCompile(want).Match(out.Bytes()) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out.String())
	}
}
