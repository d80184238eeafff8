package resources

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

// The upstream provider's settings reach the token server in the ConfigMap, in the
// format it reads, and its client secret only by reference: mounted from the user's
// Secret, never copied into the ConfigMap or the environment.
func TestUpstreamOIDC(t *testing.T) {
	tests := map[string]struct {
		key, wantKey string
		claims       *oauthv1alpha1.UpstreamClaims
	}{
		"default key, default claims": {wantKey: KeyUpstreamClientSecret},
		"own key, mapped claims": {key: "secret", wantKey: "secret",
			claims: &oauthv1alpha1.UpstreamClaims{Username: "email", Groups: "roles"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ts := server(func(ts *oauthv1alpha1.TokenServer) {
				ts.Spec.Login = &oauthv1alpha1.LoginSpec{UpstreamOIDC: &oauthv1alpha1.UpstreamOIDC{
					Issuer: "https://sso.corp.example/realms/staff", ClientID: "kubeoauth",
					ClientSecretRef: oauthv1alpha1.SecretKeyReference{Name: "sso-client", Key: tt.key},
					Scopes:          []oauthv1alpha1.Scope{"openid", "email", "groups"}, Claims: tt.claims,
					AllowedGroups: []string{"platform"}, AllowedEmailDomains: []string{"corp.example"}, DisplayName: "Corp SSO",
					UsernamePrefix: "corp:", GroupsPrefix: "corp-", FetchAllow: []string{"10.96.0.0/12"}}}
			})
			sts := TokenServerStatefulSet(ts, Inputs{Color: ColorBlue, Replicas: 1})
			c := sts.Spec.Template.Spec.Containers[0]
			env := envOf(c)
			if env["KUBEOAUTH_UPSTREAM_OIDC_FILE"] != "/etc/kubeoauth/config/upstream-oidc.json" ||
				env["KUBEOAUTH_UPSTREAM_OIDC_CLIENT_SECRET_FILE"] != "/etc/kubeoauth/upstream/client_secret" {
				t.Errorf("env %v", env)
			}
			if _, ok := env["KUBEOAUTH_USERS_FILE"]; ok {
				t.Error("a users file without usersSecretRef")
			}
			var vol *corev1.SecretVolumeSource
			for _, v := range sts.Spec.Template.Spec.Volumes {
				if v.Name == "upstream" {
					vol = v.Secret
				}
			}
			if vol == nil || vol.SecretName != "sso-client" || len(vol.Items) != 1 || vol.Items[0].Key != tt.wantKey ||
				vol.Items[0].Path != "client_secret" {
				t.Fatalf("upstream volume %+v", vol)
			}
			cm := ConfigMap(ts)
			settings := cm.Data[KeyUpstreamOIDC]
			// What the token server makes of the two files.
			dir := t.TempDir()
			for f, data := range map[string]string{"settings": settings, "secret": "s3cret\n"} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := tokenserver.LoadUpstreamOIDC(filepath.Join(dir, "settings"), filepath.Join(dir, "secret"), "")
			if err != nil {
				t.Fatal(err)
			}
			want := &tokenserver.UpstreamOIDC{Issuer: "https://sso.corp.example/realms/staff", ClientID: "kubeoauth",
				ClientSecret: "s3cret", Scopes: []string{"openid", "email", "groups"}, AllowedGroups: []string{"platform"},
				AllowedEmailDomains: []string{"corp.example"}, DisplayName: "Corp SSO", UsernamePrefix: "corp:", GroupsPrefix: "corp-",
				FetchAllow: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}
			if tt.claims != nil {
				want.Claims = tokenserver.UpstreamClaims{Username: "email", Groups: "roles"}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("the token server reads %+v, want %+v", got, want)
			}
		})
	}
	// A private CA: mounted from its Secret, named to the token server.
	withCA := server(func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Login = &oauthv1alpha1.LoginSpec{UpstreamOIDC: &oauthv1alpha1.UpstreamOIDC{Issuer: "https://sso.corp.example",
			ClientID: "kubeoauth", ClientSecretRef: oauthv1alpha1.SecretKeyReference{Name: "sso-client"},
			CASecretRef: &oauthv1alpha1.SecretKeyReference{Name: "corp-ca"}}}
	})
	pod := TokenServerStatefulSet(withCA, Inputs{Color: ColorBlue, Replicas: 1}).Spec.Template.Spec
	if env := envOf(pod.Containers[0]); env["KUBEOAUTH_UPSTREAM_OIDC_CA_FILE"] != "/etc/kubeoauth/upstream-ca/ca.crt" {
		t.Errorf("env %v", env)
	}
	found := false
	for _, v := range pod.Volumes {
		if v.Name == "upstream-ca" && v.Secret.SecretName == "corp-ca" && v.Secret.Items[0].Key == "ca.crt" {
			found = true
		}
	}
	if !found {
		t.Errorf("no upstream-ca volume of Secret corp-ca: %+v", pod.Volumes)
	}
	if name, _ := UpstreamCARef(server()); name != "" {
		t.Errorf("a CA Secret %q without upstreamOIDC", name)
	}
	// Without an upstream provider: no settings, no mount.
	plain := server()
	if _, ok := ConfigMap(plain).Data[KeyUpstreamOIDC]; ok {
		t.Error("upstream settings without upstreamOIDC")
	}
	if name, _ := UpstreamSecretRef(plain); name != "" {
		t.Errorf("an upstream Secret %q without upstreamOIDC", name)
	}
}
