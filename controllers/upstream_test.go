package controllers_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminpki"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// A TokenServer that signs people in upstream waits, with a condition naming the
// field, for the Secret of the upstream client secret and for its key; then its
// ConfigMap carries the provider's settings and the pods mount the secret from the
// user's Secret, by reference.
func TestUpstreamClientSecretMissing(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "upstream", nil)
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pg"},
		StringData: map[string]string{"dsn": "postgres://app:pw@pg.example:5432/app?sslmode=require"}}); err != nil {
		t.Fatal(err)
	}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), Image: "kubeoauth/tokenserver:test",
			Database: &oauthv1alpha1.DatabaseSpec{External: &oauthv1alpha1.ExternalDatabase{SecretRef: oauthv1alpha1.SecretKeyReference{Name: "pg"}}},
			Login: &oauthv1alpha1.LoginSpec{UpstreamOIDC: &oauthv1alpha1.UpstreamOIDC{Issuer: "https://sso.example.com", ClientID: "kubeoauth",
				ClientSecretRef: oauthv1alpha1.SecretKeyReference{Name: "sso", Key: "secret"}, AllowedGroups: []string{"platform"}}}}}
	if err := k8s.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ts) })
	want := "waiting for Secret sso with key secret (spec.login.upstreamOIDC.clientSecretRef)"
	waitMessage := func(what string) {
		t.Helper()
		waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionTrue, "SecretMissing")
		for _, c := range ts.Status.Conditions {
			if c.Type == oauthv1alpha1.ConditionProgressing && c.Message != want {
				t.Errorf("%s: condition message %q, want %q", what, c.Message, want)
			}
		}
	}
	waitMessage("no Secret")

	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sso"}, StringData: map[string]string{"client_secret": "x"}}
	if err := k8s.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitMessage("the Secret without the key")

	sec.StringData = map[string]string{"secret": "s3cret"}
	if err := k8s.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionTrue, "Migrating")

	// A private CA named and not there yet: waiting again, naming that field.
	patch := client.MergeFrom(ts.DeepCopy())
	ts.Spec.Login.UpstreamOIDC.CASecretRef = &oauthv1alpha1.SecretKeyReference{Name: "corp-ca"}
	if err := k8s.Patch(ctx, ts, patch); err != nil {
		t.Fatal(err)
	}
	want = "waiting for Secret corp-ca with key ca.crt (spec.login.upstreamOIDC.caSecretRef)"
	waitMessage("no CA Secret")

	// A CA key without a certificate would crash-loop the pods: a condition instead.
	ca := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "corp-ca"}, StringData: map[string]string{"ca.crt": "not a certificate"}}
	if err := k8s.Create(ctx, ca); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionTrue, "InvalidSecret")
	for _, c := range ts.Status.Conditions {
		if want := "Secret corp-ca key ca.crt holds no PEM certificate (spec.login.upstreamOIDC.caSecretRef)"; c.Type ==
			oauthv1alpha1.ConditionProgressing && c.Message != want {
			t.Errorf("condition message %q, want %q", c.Message, want)
		}
	}
	caCert, _, err := adminpki.NewCA("corp CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca.StringData = map[string]string{"ca.crt": string(caCert)}
	if err := k8s.Update(ctx, ca); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionTrue, "Migrating")
	var cm corev1.ConfigMap
	get(t, ns, "auth-config", &cm)
	if s := cm.Data[resources.KeyUpstreamOIDC]; !strings.Contains(s, `"issuer":"https://sso.example.com"`) ||
		!strings.Contains(s, `"allowedGroups":["platform"]`) || strings.Contains(s, "s3cret") {
		t.Errorf("ConfigMap %s: %s", resources.KeyUpstreamOIDC, s)
	}
}
