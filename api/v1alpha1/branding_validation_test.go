package v1alpha1_test

import (
	"strings"
	"testing"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// spec.branding: what a page shows is refused at the API when a browser would run
// it (javascript:), fetch it insecurely (http: on an https page) or read it as
// something else than an image; the refusal names the field.
func TestTokenServerBrandingValidation(t *testing.T) {
	const logoMsg = "must be an https URL without user info"
	png := "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
	branding := func(b v1.Branding) func(*v1.TokenServerSpec) {
		return func(s *v1.TokenServerSpec) { s.Branding = &b }
	}
	tests := map[string]struct {
		spec func(*v1.TokenServerSpec)
		want rejected
	}{
		"name, https logo and templates": {branding(v1.Branding{DisplayName: "Example Corp", LogoURL: "https://cdn.example.com:8443/logo.svg?v=2",
			TemplatesConfigMapRef: &v1.LocalObjectReference{Name: "auth-templates"}}), ok()},
		"an inline PNG":      {branding(v1.Branding{LogoURL: png}), ok()},
		"an inline SVG":      {branding(v1.Branding{LogoURL: "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4="}), ok()},
		"an http logo":       {branding(v1.Branding{LogoURL: "http://cdn.example.com/logo.png"}), reject("spec.branding.logoURL", logoMsg)},
		"a javascript: logo": {branding(v1.Branding{LogoURL: "javascript:alert(document.cookie)"}), reject("spec.branding.logoURL", logoMsg)},
		"an inline HTML document": {branding(v1.Branding{LogoURL: "data:text/html;base64,PHNjcmlwdD48L3NjcmlwdD4="}),
			reject("spec.branding.logoURL", logoMsg)},
		"an inline SVG not in base64": {branding(v1.Branding{LogoURL: "data:image/svg+xml,<svg onload=alert(1)>"}),
			reject("spec.branding.logoURL", logoMsg)},
		"user info before the host": {branding(v1.Branding{LogoURL: "https://cdn.example.com@evil.example/logo.png"}),
			reject("spec.branding.logoURL", logoMsg)},
		"a quote that would end the attribute": {branding(v1.Branding{LogoURL: `https://cdn.example.com/x"onerror="alert(1)`}),
			reject("spec.branding.logoURL", logoMsg)},
		"a logo too large to inline": {branding(v1.Branding{LogoURL: png + strings.Repeat("A", 32768)}),
			reject("spec.branding.logoURL", "Too long")},
		// 32768 characters, 65536 bytes: the token server counts bytes (pages.ParseBrand).
		"a non-ASCII logo URL over 32768 bytes": {branding(v1.Branding{LogoURL: "https://cdn.example.com/" + strings.Repeat("é", 16384) + ".svg"}),
			reject("spec.branding.logoURL", "must be at most 32768 bytes")},
		"a non-ASCII logo URL of 32768 bytes": {branding(v1.Branding{LogoURL: "https://cdn.example.com/" +
			strings.Repeat("é", (32768-len("https://cdn.example.com/.svg"))/2) + ".svg"}), ok()},
		"a name too long": {branding(v1.Branding{DisplayName: strings.Repeat("x", 65)}),
			reject("spec.branding.displayName", "Too long")},
		"a name of two lines": {branding(v1.Branding{DisplayName: "Example\nCorp"}),
			reject("spec.branding.displayName", "must be one line of text, without control characters")},
		"a line separator in the name": {branding(v1.Branding{DisplayName: "Example\u2028Corp"}),
			reject("spec.branding.displayName", "line or paragraph separators")},
		"a right-to-left override in the name": {branding(v1.Branding{DisplayName: "\u202eproC elpmaxE"}),
			reject("spec.branding.displayName", "bidirectional overrides and isolates")},
		"an isolate in the name": {branding(v1.Branding{DisplayName: "Example \u2067Corp\u2069"}),
			reject("spec.branding.displayName", "bidirectional overrides and isolates")},
		"a name in Hebrew":  {branding(v1.Branding{DisplayName: "דוגמה בע״מ"}), ok()},
		"a dot for a host":  {branding(v1.Branding{LogoURL: "https://../logo.png"}), reject("spec.branding.logoURL", logoMsg)},
		"a dash for a host": {branding(v1.Branding{LogoURL: "https://-/logo.png"}), reject("spec.branding.logoURL", logoMsg)},
		"an empty host":     {branding(v1.Branding{LogoURL: "https:///logo.png"}), reject("spec.branding.logoURL", logoMsg)},
		"a port over 65535": {branding(v1.Branding{LogoURL: "https://cdn.example.com:99999/logo.png"}), reject("spec.branding.logoURL", logoMsg)},
		"port 65535":        {branding(v1.Branding{LogoURL: "https://cdn.example.com:65535/logo.png"}), ok()},
		"a ConfigMap without a name": {branding(v1.Branding{TemplatesConfigMapRef: &v1.LocalObjectReference{}}),
			reject("spec.branding.templatesConfigMapRef.name", "")},
		"an external server": {func(s *v1.TokenServerSpec) {
			s.Image, s.Database = "", nil
			s.External = &v1.ExternalTokenServer{AdminURL: "https://auth-admin:4445", TokenSecretRef: v1.SecretKeyReference{Name: "a"}}
			s.Branding = &v1.Branding{DisplayName: "Example Corp"}
		}, reject("spec.branding", "branding is for bundled token servers")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) { create(t, tokenServer(tc.spec), tc.want) })
	}
}

// The operator's own ConfigMaps cannot be the templates' source: it would take the
// user's ConfigMap over (and delete it with the TokenServer), and the pods would
// mount the unchecked source itself.
func TestTokenServerTemplatesNotTheOperatorsCopy(t *testing.T) {
	const msg = "spec.branding.templatesConfigMapRef.name must not be <metadata.name>-pages or <metadata.name>-config"
	for name, want := range map[string]rejected{
		"auth-pages":     reject("spec.branding.templatesConfigMapRef.name", msg),
		"auth-config":    reject("spec.branding.templatesConfigMapRef.name", msg),
		"auth-templates": ok(),
		"other-pages":    ok(), // another TokenServer's copy is no copy of this one
	} {
		t.Run(name, func(t *testing.T) {
			ts := tokenServer(func(s *v1.TokenServerSpec) {
				s.Branding = &v1.Branding{TemplatesConfigMapRef: &v1.LocalObjectReference{Name: name}}
			})
			ts.GenerateName, ts.Name = "", "auth"
			create(t, ts, want)
		})
	}
}
