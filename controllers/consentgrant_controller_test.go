package controllers_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/testing/tcpproxy"
)

// firstPartyServer creates a namespace whose clients are first-party on its own
// TokenServer, whose admin API is reached through adminURL (the suite's server, or a
// proxy in front of it).
func firstPartyServer(t *testing.T, adminURL string) string {
	t.Helper()
	ns := namespace(t, "platform", map[string]string{"first-party": "true"})
	externalServer(t, ns, func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.FirstPartyNamespaces = &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{
			MatchLabels: map[string]string{"first-party": "true"}}}
		if adminURL != "" {
			ts.Spec.External.AdminURL = adminURL
		}
	})
	return ns
}

func readyClient(t *testing.T, ns, name string) *oauthv1alpha1.OAuthClient {
	t.Helper()
	oc := newClient(ns, name, "", nil)
	if err := k8s.Create(context.Background(), oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	return oc
}

func grant(ns, clientName, subject string, scopes ...oauthv1alpha1.Scope) *oauthv1alpha1.ConsentGrant {
	return &oauthv1alpha1.ConsentGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: clientName + "-" + subject},
		Spec: oauthv1alpha1.ConsentGrantSpec{ClientRef: oauthv1alpha1.LocalObjectReference{Name: clientName},
			Subject: subject, Scopes: scopes}}
}

func serverGrants(t *testing.T, clientID, subject string) []adminapi.Grant {
	t.Helper()
	gs, err := admin.ListGrants(context.Background(), clientID, subject)
	if err != nil {
		t.Fatal(err)
	}
	return gs
}

// A declared grant becomes pre-approved consent on the token server; deleting it
// revokes it before the resource goes. Outside first-party namespaces it is refused.
func TestDeclaredGrant(t *testing.T) {
	ctx := context.Background()
	ns := firstPartyServer(t, "")
	oc := readyClient(t, ns, "wiki")
	cg := grant(ns, "wiki", "alice", "openid", "zones.read")
	if err := k8s.Create(ctx, cg); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, cg, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	gs := serverGrants(t, oc.Status.ClientID, "alice")
	if len(gs) != 1 || gs[0].Source != "declared" || len(gs[0].Scopes) != 2 {
		t.Fatalf("on the token server: %+v", gs)
	}
	if cg.Status.ClientID != oc.Status.ClientID || cg.Status.GrantedAt == nil {
		t.Errorf("status = %+v", cg.Status)
	}
	if err := k8s.Delete(ctx, cg); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the ConsentGrant is gone", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(cg), cg))
	}, nil)
	if gs := serverGrants(t, oc.Status.ClientID, "alice"); len(gs) != 0 {
		t.Errorf("the grant outlived its resource: %+v", gs)
	}

	// Not first-party: refused, nothing pushed.
	other := namespace(t, "platform", nil)
	externalServer(t, other, nil)
	oc2 := readyClient(t, other, "shop")
	cg2 := grant(other, "shop", "bob", "openid")
	if err := k8s.Create(ctx, cg2); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, cg2, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNotFirstParty)
	if gs := serverGrants(t, oc2.Status.ClientID, "bob"); len(gs) != 0 {
		t.Errorf("a refused grant reached the token server: %+v", gs)
	}
}

// Deleting a grant while the token server is unreachable waits, and says why in
// kubectl describe (Reconciling DeleteFailed, a Warning event); when it is back, the
// grant is revoked and the resource goes. Nothing is lost.
func TestGrantDeleteWhileServerDown(t *testing.T) {
	ctx := context.Background()
	proxy := tcpproxy.Start(t, "127.0.0.1", "tcp", admin.BaseURL[len("http://"):])
	ns := firstPartyServer(t, "http://"+proxy.Addr)
	oc := readyClient(t, ns, "ci")
	cg := grant(ns, "ci", "carol", "openid")
	if err := k8s.Create(ctx, cg); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, cg, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")

	proxy.Down()
	if err := k8s.Delete(ctx, cg); err != nil {
		t.Fatal(err)
	}
	heldDelete(t, cg, "carol")
	if gs := serverGrants(t, oc.Status.ClientID, "carol"); len(gs) != 1 {
		t.Fatalf("grant on the server while it was unreachable: %+v", gs)
	}
	proxy.Up()
	eventually(t, 60*time.Second, "the ConsentGrant is gone once the server is back", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(cg), cg))
	}, nil)
	if gs := serverGrants(t, oc.Status.ClientID, "carol"); len(gs) != 0 {
		t.Errorf("the grant survived: %+v", gs)
	}
}

// heldDelete checks that obj, deleted while its token server is unreachable, stays
// Terminating and tells why, as a user reads it: Ready=False and Reconciling=True
// DeleteFailed naming what is not undone yet (what), and one Warning event.
func heldDelete(t *testing.T, obj client.Object, what string) {
	t.Helper()
	waitCondition(t, obj, oauthv1alpha1.ConditionReconciling, metav1.ConditionTrue, controllers.ReasonDeleteFailed)
	if obj.GetDeletionTimestamp().IsZero() {
		t.Fatalf("%s should wait, Terminating", obj.GetName())
	}
	for _, c := range conditionsOf(obj) {
		if c.Type == oauthv1alpha1.ConditionReady && (c.Status != metav1.ConditionFalse || c.Reason != controllers.ReasonDeleteFailed ||
			!strings.Contains(c.Message, what)) {
			t.Errorf("Ready while the delete is held: %+v", c)
		}
	}
	if note := waitWarning(t, obj.GetNamespace(), obj.GetName(), controllers.ReasonDeleteFailed); !strings.Contains(note, what) {
		t.Errorf("the DeleteFailed event says %q, not what waits (%s)", note, what)
	}
}

// A consent given in the browser appears as a mirrored ConsentGrant within seconds;
// revoked on the connected-apps page, it goes away.
func TestMirrorOfBrowserConsent(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "platform", nil)
	externalServer(t, ns, nil)
	oc := readyClient(t, ns, "grafana")
	// What the consent page does when the user clicks Allow.
	if _, err := admin.PutGrant(ctx, &adminapi.Grant{ClientID: oc.Status.ClientID, Subject: "dave",
		Scopes: []string{"openid", "zones.read"}, Source: "browser"}); err != nil {
		t.Fatal(err)
	}
	mirror := &oauthv1alpha1.ConsentGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: controllers.MirrorName("grafana", "dave")}}
	eventually(t, 15*time.Second, "the mirrored ConsentGrant appears", func() bool {
		return k8s.Get(ctx, client.ObjectKeyFromObject(mirror), mirror) == nil
	}, nil)
	if mirror.Labels[oauthv1alpha1.LabelSource] != oauthv1alpha1.SourceMirrored || mirror.Spec.Subject != "dave" ||
		len(mirror.Spec.Scopes) != 2 || mirror.Spec.ClientRef.Name != "grafana" {
		t.Errorf("mirror = %+v", mirror)
	}
	waitCondition(t, mirror, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	// What the connected-apps page does when the user clicks Revoke.
	if err := admin.DeleteGrant(ctx, oc.Status.ClientID, "dave"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the mirrored ConsentGrant goes", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(mirror), mirror))
	}, nil)
}

// Deleting an OAuthClient while its token server is unreachable keeps it Terminating
// and says why, until the server is back and the client deregistered there.
func TestClientDeleteWhileServerDown(t *testing.T) {
	ctx := context.Background()
	proxy := tcpproxy.Start(t, "127.0.0.1", "tcp", admin.BaseURL[len("http://"):])
	ns := firstPartyServer(t, "http://"+proxy.Addr)
	oc := readyClient(t, ns, "ci")
	id := oc.Status.ClientID

	proxy.Down()
	if err := k8s.Delete(ctx, oc); err != nil {
		t.Fatal(err)
	}
	heldDelete(t, oc, "client "+id+" is still registered")
	if _, err := admin.GetClient(ctx, id); err != nil {
		t.Fatalf("the client left the token server while it was unreachable: %v", err)
	}
	proxy.Up()
	eventually(t, 60*time.Second, "the OAuthClient is gone once the server is back", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(oc), oc))
	}, nil)
	if _, err := admin.GetClient(ctx, id); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("the client survived its delete: %v", err)
	}
}
