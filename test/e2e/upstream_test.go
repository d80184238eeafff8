//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminpki"
	"github.com/kubeoauth/kubeoauth/internal/testing/headless"
)

const (
	ssoNS = "sso-e2e"
	// The upstream provider's image (hack/upstream-op, built by make test-e2e),
	// loaded into the node by the test.
	ssoImage         = "ghcr.io/kubeoauth/e2e-upstream-op:test"
	ssoPassword      = "upstream-password" // hack/upstream-op's
	ssoClientSecret  = "kubeoauth-at-sso-0123456789abcdef"
	ssoProviderPort  = 8443
	ssoProviderHost  = "sso." + ssoNS + ".svc"
	ssoProviderURL   = "https://" + ssoProviderHost + ":8443"
	ssoProviderLabel = "Corp SSO"
)

// A TokenServer whose people sign in at an upstream OpenID provider running as a pod
// on the node (zitadel's example OP over HTTPS, hack/upstream-op): in headless
// Chromium, kubeoauth's login page → "Sign in with Corp SSO" → the provider's login
// page → kubeoauth's consent page → the app, whose ID token (verified by go-oidc)
// and userinfo carry the upstream user's email and groups.
func testUpstreamOIDC(t *testing.T) {
	ctx := t.Context()
	issuer := forwardService(t, ssoNS, "auth")
	providerAddr := forwardService(t, ssoNS, "sso") // the browser's way to the provider

	// The provider's certificate, for the name the token server reaches it by, from
	// a private CA the TokenServer names in caSecretRef.
	now := time.Now()
	caCert, caKey, err := adminpki.NewCA("e2e upstream CA", now)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := adminpki.IssueServing(caCert, caKey, []string{ssoProviderHost}, now)
	if err != nil {
		t.Fatal(err)
	}
	images := filepath.Join(t.TempDir(), "upstream-e2e.yaml")
	if err := os.WriteFile(images, []byte(fmt.Sprintf(`images:
  - image: %s
    command: ["${KUBEOAUTH_BIN}/upstream-op"]
    user: "65532:65532"
`, ssoImage)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(suite.tool, "load", "--dir", suite.dir, "--bin", filepath.Join(suite.repo, "bin"), images).CombinedOutput() // #nosec G204 -- our tool
	if err != nil {
		t.Fatalf("loading the images: %v\n%s", err, out)
	}

	sso := map[string]string{"app": "sso"}
	// Local accounts beside the provider: the login page offers both.
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-local-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := "alice:" + string(hash) + "\n"
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ssoNS, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), Image: imageV1, Replicas: ptr.To[int32](1),
			Database: &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{StorageSize: resource.MustParse("1Gi")}},
			Login: &oauthv1alpha1.LoginSpec{
				UsersSecretRef: &oauthv1alpha1.SecretKeyReference{Name: "auth-users"},
				UpstreamOIDC: &oauthv1alpha1.UpstreamOIDC{Issuer: ssoProviderURL, ClientID: "kubeoauth",
					ClientSecretRef: oauthv1alpha1.SecretKeyReference{Name: "sso-client"},
					CASecretRef:     &oauthv1alpha1.SecretKeyReference{Name: "sso-ca"},
					Scopes:          []oauthv1alpha1.Scope{"openid", "profile", "email", "groups"},
					DisplayName:     ssoProviderLabel, AllowedGroups: []string{"platform"},
					// The provider is a pod: a private address, reached only when allowed.
					FetchAllow: []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}}}}}
	smallPods(ts)
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ssoNS}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ssoNS, Name: "sso-tls"},
			Data: map[string][]byte{"tls.crt": cert, "tls.key": key}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ssoNS, Name: "sso-ca"}, Data: map[string][]byte{"ca.crt": caCert}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ssoNS, Name: "sso-client"},
			StringData: map[string]string{"client_secret": ssoClientSecret}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ssoNS, Name: "auth-users"}, StringData: map[string]string{"users": users}},
		// Headless: the cluster DNS answers the pod's address, which the token
		// server dials at the issuer's port; port 80 is the test's port-forward.
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ssoNS, Name: "sso"}, Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone, Selector: sso,
			Ports: []corev1.ServicePort{{Name: "https", Port: 80, TargetPort: intstr.FromInt32(ssoProviderPort)}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ssoNS, Name: "sso", Labels: sso}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "op", Image: ssoImage, Args: []string{"--issuer", ssoProviderURL,
				"--listen", fmt.Sprintf(":%d", ssoProviderPort), "--tls-cert", "/etc/sso-tls/tls.crt", "--tls-key", "/etc/sso-tls/tls.key",
				"--client-id", "kubeoauth", "--client-secret", ssoClientSecret, "--redirect-uri", issuer + "/login/upstream/callback"},
				Ports:        []corev1.ContainerPort{{Name: "https", ContainerPort: ssoProviderPort}},
				VolumeMounts: []corev1.VolumeMount{{Name: "tls", MountPath: "/etc/sso-tls", ReadOnly: true}}}},
			Volumes: []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sso-tls"}}}}}},
		ts,
	} {
		if err := suite.c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = kubectl(context.Background(), "delete", "namespace", ssoNS, "--wait=false")
	})
	eventually(t, 4*time.Minute, "TokenServer sso-e2e/auth Ready", func() error {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(ts), ts); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(ts.Status.Conditions, oauthv1alpha1.ConditionReady) {
			return fmt.Errorf("conditions %+v", ts.Status.Conditions)
		}
		return nil
	})
	// The provider answers through the port-forward, with the certificate for its name.
	pool, err := adminpki.Pool(caCert)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: ssoProviderHost, MinVersion: tls.VersionTLS12}}}
	providerURL := strings.Replace(providerAddr, "http://", "https://", 1)
	eventually(t, time.Minute, "the upstream provider's discovery", func() error {
		resp, err := hc.Get(providerURL + "/.well-known/openid-configuration")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})

	// The app: an OAuthClient and its callback on the host.
	callback, query := appCallback(t, "Wiki")
	oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: ssoNS, Name: "wiki"},
		Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth"},
			ClientName: "Wiki", GrantTypes: []oauthv1alpha1.GrantType{oauthv1alpha1.GrantAuthorizationCode},
			RedirectURIs: []oauthv1alpha1.URL{oauthv1alpha1.URL(callback)}, Scopes: []oauthv1alpha1.Scope{"openid"}}}
	if err := suite.c.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitReady(t, oc)
	id, secret := clientSecretIn(t, ssoNS, "wiki-oauth")
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := oauth2.Config{ClientID: id, ClientSecret: secret, RedirectURL: callback,
		Scopes: []string{"openid", "profile", "email", "groups"}, Endpoint: provider.Endpoint()}
	verifier := oauth2.GenerateVerifier()

	// The browser reaches the provider by its cluster name through the port-forward,
	// as a person's browser would through the company's DNS; the test CA is not its.
	forward := strings.TrimPrefix(providerAddr, "http://")
	bctx := headless.Chromium(t, chromedp.Flag("host-resolver-rules", "MAP "+ssoProviderHost+" "+forward),
		chromedp.Flag("ignore-certificate-errors", true))
	const opForm = `form[action="/login/username"]`
	var button, who string
	if err := chromedp.Run(bctx,
		chromedp.Navigate(cfg.AuthCodeURL("state-sso-0001", oauth2.S256ChallengeOption(verifier))),
		chromedp.WaitVisible("#sign-in-upstream", chromedp.ByID),
		chromedp.WaitVisible("#username", chromedp.ByID), // the password form beside it
		chromedp.Text("#sign-in-upstream", &button, chromedp.ByID),
		chromedp.Click("#sign-in-upstream", chromedp.ByID),
		// zitadel's example login page: its form, not ours, which has fields of the
		// same names and may still be there while the browser navigates.
		chromedp.WaitVisible(opForm+` input[name="username"]`, chromedp.ByQuery),
		chromedp.SendKeys(opForm+` input[name="username"]`, "carol", chromedp.ByQuery),
		chromedp.SendKeys(opForm+` input[name="password"]`, ssoPassword, chromedp.ByQuery),
		chromedp.Click(opForm+` button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible("#approve", chromedp.ByID),
		chromedp.Text("body", &who, chromedp.ByQuery),
		chromedp.Click("#approve", chromedp.ByID),
		chromedp.WaitVisible("#result", chromedp.ByID),
	); err != nil {
		out, _ := kubectl(context.Background(), "-n", ssoNS, "logs", "auth-blue-0", "--tail", "40")
		op, _ := kubectl(context.Background(), "-n", ssoNS, "logs", "sso", "--tail", "20")
		t.Fatalf("signing in through the upstream provider in the browser: %v\ntoken server log:\n%s\nprovider log:\n%s", err, out, op)
	}
	if button != "Sign in with "+ssoProviderLabel || !strings.Contains(who, "You are signed in as carol.") {
		t.Errorf("button %q, consent page %q", button, who)
	}
	code := query().Get("code")
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the browser's code: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: id}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("go-oidc refused the ID token: %v", err)
	}
	type claims struct {
		Sub, Email, Name  string
		PreferredUsername string `json:"preferred_username"`
		EmailVerified     bool   `json:"email_verified"`
		Groups            []string
	}
	var c claims
	if err := idt.Claims(&c); err != nil {
		t.Fatal(err)
	}
	// Her subject: the provider's sub behind a tag of the provider's issuer.
	sum := sha256.Sum256([]byte(ssoProviderURL))
	carol := "upstream:" + base64.RawURLEncoding.EncodeToString(sum[:])[:12] + ":u-carol"
	if c.Sub != carol || c.Email != "carol@corp.example" || !c.EmailVerified || c.PreferredUsername != "carol" ||
		c.Name != "Carol Danvers" || !slices.Equal(c.Groups, []string{"platform", "oncall"}) {
		t.Errorf("ID token claims %+v", c)
	}
	ui, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatal(err)
	}
	var uc claims
	if err := ui.Claims(&uc); err != nil {
		t.Fatal(err)
	}
	if uc.Email != "carol@corp.example" || !slices.Equal(uc.Groups, []string{"platform", "oncall"}) {
		t.Errorf("userinfo %+v", uc)
	}
	// Her consent is mirrored as a ConsentGrant like anyone's, under her subject.
	eventually(t, 30*time.Second, "carol's consent mirrored as a ConsentGrant", func() error {
		var list oauthv1alpha1.ConsentGrantList
		if err := suite.c.List(ctx, &list, client.InNamespace(ssoNS)); err != nil {
			return err
		}
		for _, cg := range list.Items {
			if cg.Spec.ClientRef.Name == "wiki" && cg.Spec.Subject == carol {
				return nil
			}
		}
		return fmt.Errorf("%d grants, none for wiki/%s", len(list.Items), carol)
	})
}

// clientSecretIn reads an OAuthClient's generated credentials.
func clientSecretIn(t *testing.T, ns, name string) (id, secret string) {
	t.Helper()
	var s corev1.Secret
	eventually(t, 30*time.Second, "Secret "+name, func() error {
		return suite.c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &s)
	})
	return string(s.Data["client_id"]), string(s.Data["client_secret"])
}
