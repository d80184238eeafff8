package controllers_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/adminpki"
	"github.com/kubeoauth/kubeoauth/internal/testing/tcpproxy"
)

// waitReadyMessage waits until obj's Ready condition's message contains part.
func waitReadyMessage(t *testing.T, obj client.Object, part string) {
	t.Helper()
	condType := oauthv1alpha1.ConditionReady
	var last []metav1.Condition
	eventually(t, 20*time.Second, obj.GetName()+": "+condType+" saying "+part, func() bool {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return false
		}
		last = conditionsOf(obj)
		for _, c := range last {
			if c.Type == condType && strings.Contains(c.Message, part) {
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("conditions: %+v", last) })
}

// TestExternalAdminURLGuard: an external TokenServer whose adminURL points at an
// internal address the operator was not told to allow (here a loopback address
// other than the suite's 127.0.0.1, standing for a pod, node or metadata endpoint) is refused when dialled:
// nothing reaches it, and the condition says why without any response text.
func TestExternalAdminURLGuard(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "ssrf", nil)
	var hits atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("internal data"))
	}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-admin"},
		StringData: map[string]string{"token": adminToken}}); err != nil {
		t.Fatal(err)
	}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), External: &oauthv1alpha1.ExternalTokenServer{
			AdminURL: "http://" + ln.Addr().String(), Insecure: true, TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "auth-admin"}}}}
	if err := k8s.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	waitReadyMessage(t, ts, "address refused")
	if c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionReady); c.Status != metav1.ConditionFalse ||
		strings.Contains(c.Message, "internal data") {
		t.Errorf("Ready = %+v", c)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the internal server got %d requests", n)
	}
}

// TestExternalAdminCA: an external admin API over TLS is trusted through
// spec.external.caSecretRef, and only through it.
func TestExternalAdminCA(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	ca, caKey, _ := adminpki.NewCA("external admin CA", now)
	cert, key, _ := adminpki.IssueServing(ca, caKey, []string{"localhost"}, now)
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	p := tcpproxy.StartTLS(t, "127.0.0.1", admin.BaseURL[len("http://"):], pair)
	_, port, _ := net.SplitHostPort(p.Addr)
	url := "https://localhost:" + port

	// Without the CA: the system's roots do not know ours.
	ns := namespace(t, "external-tls", nil)
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-admin"},
		StringData: map[string]string{"token": adminToken}}); err != nil {
		t.Fatal(err)
	}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), External: &oauthv1alpha1.ExternalTokenServer{
			AdminURL: url, TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "auth-admin"}}}}
	if err := k8s.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	waitReadyMessage(t, ts, "certificate signed by unknown authority")

	// With it: Ready.
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-admin-ca"},
		Data: map[string][]byte{"ca.crt": ca}}); err != nil {
		t.Fatal(err)
	}
	get(t, ns, "auth", ts)
	ts.Spec.External.CASecretRef = &oauthv1alpha1.SecretKeyReference{Name: "auth-admin-ca"}
	if err := k8s.Update(ctx, ts); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
}

// An http adminURL is accepted only with spec.external.insecure (the CRD refuses it
// otherwise), and never silently: Ready says the token travels in clear text and a
// Warning event says so once.
func TestInsecureAdminURLSaysSo(t *testing.T) {
	platform := namespace(t, "platform-http", nil)
	externalServer(t, platform, nil) // the suite's server: http on loopback, insecure: true
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: platform, Name: "auth"}}
	waitReadyMessage(t, ts, "clear text")
	waitServerWarning(t, controllers.ReasonInsecureAdminURL, platform, "clear text", "spec.external.insecure")
}
