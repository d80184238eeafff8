package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// Labels of the tenancy tests' TokenServer: which namespaces may register clients,
// and which are first-party.
const (
	labelClients    = "oauth.kubeoauth.io/clients"
	labelFirstParty = "oauth.kubeoauth.io/first-party"
)

var (
	admittedLabels   = map[string]string{labelClients: "allowed"}
	firstPartyLabels = map[string]string{labelClients: "allowed", labelFirstParty: "true"}
)

// tenancyServer creates a platform namespace whose TokenServer admits namespaces
// labelled clients=allowed, first-party those labelled first-party=true.
func tenancyServer(t *testing.T) string {
	t.Helper()
	platform := namespace(t, "platform", nil)
	externalServer(t, platform, func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.ClientNamespaces = &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{
			MatchLabels: map[string]string{labelClients: "allowed"}}}
		ts.Spec.FirstPartyNamespaces = &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{
			MatchLabels: map[string]string{labelFirstParty: "true"}}}
	})
	return platform
}

// webClient is an app that both signs users in (redirect URI) and calls APIs.
func webClient(ns, name, serverNS, redirect string, mutate func(*oauthv1alpha1.OAuthClient)) *oauthv1alpha1.OAuthClient {
	return newClient(ns, name, serverNS, func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.GrantTypes = []oauthv1alpha1.GrantType{"authorization_code", "client_credentials"}
		oc.Spec.RedirectURIs = []oauthv1alpha1.URL{oauthv1alpha1.URL(redirect)}
		if mutate != nil {
			mutate(oc)
		}
	})
}

func setLabels(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var ns corev1.Namespace
		if err := k8s.Get(context.Background(), types.NamespacedName{Name: name}, &ns); err != nil {
			return err
		}
		ns.Labels = labels
		return k8s.Update(context.Background(), &ns)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitWarning waits for a Warning event with reason on the object ns/name, and
// returns its note.
func waitWarning(t *testing.T, ns, name, reason string) string {
	t.Helper()
	var note string
	eventually(t, 20*time.Second, fmt.Sprintf("a Warning event %s on %s/%s", reason, ns, name), func() bool {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return false
		}
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == reason && e.Type == corev1.EventTypeWarning {
				note = e.Note
				return true
			}
		}
		return false
	}, nil)
	return note
}

// victimIntact checks, as the victim's team would, that its client still works: its
// Secret's credentials get a token, and the token server has its owner and redirect
// URIs.
func victimIntact(t *testing.T, victim *oauthv1alpha1.OAuthClient, redirect string) {
	t.Helper()
	if _, err := token(t, victim.Namespace, victim.Name+"-oauth"); err != nil {
		t.Errorf("the victim's credentials stopped working: %v", err)
	}
	got, err := admin.GetClient(context.Background(), victim.Status.ClientID)
	if err != nil || got.OwnerNamespace != victim.Namespace || !slices.Equal(got.RedirectURIs, []string{redirect}) {
		t.Errorf("the victim's client on the token server: %+v, %v; want owner %s, redirect URIs [%s]",
			got, err, victim.Namespace, redirect)
	}
}

// One tenant cannot take over, nor delete, another's client by naming its client ID:
// from a namespace outside the ID's range, from a namespace whose range overlaps it,
// or from a namespace the TokenServer does not even admit. Each attacker gets
// Ready=False with a reason naming the conflict and a Warning event; the victim's
// client keeps its secret, redirect URIs and owner through the attacks and the
// attackers' deletion.
func TestTenantCannotTakeOverOrDeleteAClient(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	attackerNS := namespace(t, "tenant-x", admittedLabels)
	// "<attackerNS>-…": a custom ID in the victim's range also starts with the
	// attacker's prefix, so only the token server's owner check stands between them.
	victimNS := namespace(t, attackerNS, admittedLabels)
	outsiderNS := namespace(t, "tenant-y", admittedLabels)
	rogueNS := namespace(t, "rogue", nil)

	const good, evil = "https://app.tenant-a.example.com/cb", "https://evil.example.com/cb"
	victim := webClient(victimNS, "web", platform, good, nil)
	if err := k8s.Create(ctx, victim); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, victim, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	id := victim.Status.ClientID
	victimIntact(t, victim, good)

	attack := func(ns, name string) *oauthv1alpha1.OAuthClient {
		oc := webClient(ns, name, platform, evil, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = id })
		if err := k8s.Create(ctx, oc); err != nil {
			t.Fatal(err)
		}
		return oc
	}

	// Outside the ID's range: refused by the operator before anything is pushed.
	outsider := attack(outsiderNS, "web")
	waitCondition(t, outsider, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonClientIDNotAllowed)
	if note := waitWarning(t, outsiderNS, "web", controllers.ReasonClientIDNotAllowed); !strings.Contains(note, outsiderNS+"-") {
		t.Errorf("event %q does not say which prefix is allowed", note)
	}

	// Overlapping range: the token server refuses to change the owner (409).
	overlap := attack(attackerNS, "web")
	waitCondition(t, overlap, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonClientIDConflict)
	ready := findCondition(overlap.Status.Conditions, oauthv1alpha1.ConditionReady)
	if !strings.Contains(ready.Message, id) || !strings.Contains(ready.Message, victimNS) {
		t.Errorf("Ready message %q should name the client ID and its owner %s", ready.Message, victimNS)
	}
	waitWarning(t, attackerNS, "web", controllers.ReasonClientIDConflict)
	if overlap.Status.ClientID != "" {
		t.Errorf("a refused client recorded client ID %q as registered", overlap.Status.ClientID)
	}

	// A namespace the TokenServer does not admit.
	rogue := attack(rogueNS, "web")
	waitCondition(t, rogue, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNamespaceNotAllowed)
	waitWarning(t, rogueNS, "web", controllers.ReasonNamespaceNotAllowed)
	victimIntact(t, victim, good)

	// Deleting the attackers deletes nothing of the victim's.
	for _, oc := range []*oauthv1alpha1.OAuthClient{outsider, overlap, rogue} {
		if err := k8s.Delete(ctx, oc); err != nil {
			t.Fatal(err)
		}
	}
	for _, oc := range []*oauthv1alpha1.OAuthClient{outsider, overlap, rogue} {
		eventually(t, 10*time.Second, "attacker "+oc.Namespace+"/"+oc.Name+" is gone", func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(oc), &oauthv1alpha1.OAuthClient{}))
		}, nil)
	}
	victimIntact(t, victim, good)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(victim), victim); err != nil ||
		!isTrue(victim.Status.Conditions, oauthv1alpha1.ConditionReady) {
		t.Errorf("the victim is no longer Ready: %+v, %v", victim.Status.Conditions, err)
	}
}

// Two OAuthClients of one namespace that want the same ID: the token server cannot
// tell them apart (same owner), so the operator lets the first keep it.
func TestSameNamespaceClientIDClash(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	ns := namespace(t, "tenant-a", admittedLabels)
	first := newClient(ns, "first", platform, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = ns + "-shared" })
	if err := k8s.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, first, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	second := newClient(ns, "second", platform, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = ns + "-shared" })
	if err := k8s.Create(ctx, second); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, second, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonClientIDConflict)
	waitWarning(t, ns, "second", controllers.ReasonClientIDConflict)
	if err := k8s.Delete(ctx, second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the second is gone", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(second), second))
	}, nil)
	if _, err := token(t, ns, "first-oauth"); err != nil {
		t.Errorf("the first client's credentials after the second's deletion: %v", err)
	}
}

// A namespace that loses its admitting label loses its clients on the token server
// within seconds (their credentials are refused), with a condition and an event; the
// label back, the same credentials work again. Losing first-party status turns
// skipConsent off on the server and revokes declared grants.
func TestDeAdmission(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	ns := namespace(t, "tenant-a", firstPartyLabels)
	oc := newClient(ns, "app", platform, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.SkipConsent = true })
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	waitCondition(t, oc, controllers.ConditionSkipConsent, metav1.ConditionTrue, controllers.ReasonFirstParty)
	id := oc.Status.ClientID
	if got, err := admin.GetClient(ctx, id); err != nil || !got.SkipConsent {
		t.Fatalf("first-party client on the server: %+v, %v; want skipConsent", got, err)
	}
	cg := grant(ns, "app", "alice", "zones.read")
	if err := k8s.Create(ctx, cg); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, cg, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	if gs := serverGrants(t, id, "alice"); len(gs) != 1 || gs[0].Source != adminapi.SourceDeclared {
		t.Fatalf("declared grant on the server: %+v", gs)
	}

	// First-party status lost.
	setLabels(t, ns, admittedLabels)
	waitCondition(t, oc, controllers.ConditionSkipConsent, metav1.ConditionFalse, controllers.ReasonNotFirstParty)
	eventually(t, 10*time.Second, "skipConsent off on the token server", func() bool {
		got, err := admin.GetClient(ctx, id)
		return err == nil && !got.SkipConsent
	}, nil)
	waitWarning(t, ns, "app", controllers.ReasonNotFirstParty)
	waitCondition(t, cg, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNotFirstParty)
	eventually(t, 10*time.Second, "the declared grant revoked on the token server", func() bool {
		return len(serverGrants(t, id, "alice")) == 0
	}, nil)
	waitWarning(t, ns, cg.Name, "Revoked")

	// Admission lost.
	if _, err := token(t, ns, "app-oauth"); err != nil {
		t.Fatalf("credentials before de-admission: %v", err)
	}
	setLabels(t, ns, nil)
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNamespaceNotAllowed)
	waitWarning(t, ns, "app", controllers.ReasonDeregistered)
	eventually(t, 10*time.Second, "the token endpoint refuses the de-admitted client's credentials", func() bool {
		_, err := token(t, ns, "app-oauth")
		return err != nil
	}, nil)
	if _, err := admin.GetClient(ctx, id); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("the de-admitted client is still on the token server: %v", err)
	}
	waitCondition(t, cg, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNamespaceNotAllowed)

	// Admitted again: the same credentials work.
	setLabels(t, ns, admittedLabels)
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	if oc.Status.ClientID != id {
		t.Errorf("client ID after re-admission = %s, want %s", oc.Status.ClientID, id)
	}
	if _, err := token(t, ns, "app-oauth"); err != nil {
		t.Errorf("credentials after re-admission: %v", err)
	}
}

// A client whose name makes the mirrored ConsentGrant's name too long gets a valid
// one, and a consent that cannot be mirrored at all is reported on its client while
// the mirror goes on with the others.
func TestMirrorNamesAndErrorsPerGrant(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "platform", nil)
	externalServer(t, ns, nil)
	// The longest name whose Secret name ("<name>-oauth") is still valid; it sorts
	// before the other client, so a failure on it would come first in a full pass.
	long := "a" + strings.Repeat("b", validation.DNS1123SubdomainMaxLength-len("-oauth")-1)
	longClient := newClient(ns, long, "", func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientName = "Long" })
	if err := k8s.Create(ctx, longClient); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, longClient, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	other := readyClient(t, ns, "zeta")

	// What the consent page does when users click Allow: a subject the ConsentGrant
	// API refuses (longer than 255), then good ones.
	badSubject := strings.Repeat("s", 300)
	for _, g := range []adminapi.Grant{
		{ClientID: other.Status.ClientID, Subject: badSubject},
		{ClientID: longClient.Status.ClientID, Subject: "erin"},
		{ClientID: other.Status.ClientID, Subject: "erin"},
	} {
		g.Scopes, g.Source = []string{"zones.read"}, adminapi.SourceBrowser
		if _, err := admin.PutGrant(ctx, &g); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []struct{ client, subject string }{{long, "erin"}, {"zeta", "erin"}} {
		name := controllers.MirrorName(want.client, want.subject)
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			t.Errorf("MirrorName(%.20s…, %s) = %q: %v", want.client, want.subject, name, errs)
		}
		mirror := &oauthv1alpha1.ConsentGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		eventually(t, 15*time.Second, "the mirrored ConsentGrant of "+want.subject+" for "+want.client[:4]+"…", func() bool {
			return k8s.Get(ctx, client.ObjectKeyFromObject(mirror), mirror) == nil
		}, nil)
		if mirror.Spec.ClientRef.Name != want.client || mirror.Spec.Subject != want.subject {
			t.Errorf("mirror %s = %+v", name, mirror.Spec)
		}
	}
	if note := waitWarning(t, ns, "zeta", controllers.ReasonMirrorFailed); !strings.Contains(note, badSubject[:20]) {
		t.Errorf("MirrorFailed event %q does not name the subject", note)
	}
	if a, b := controllers.MirrorName(long+"x", "erin"), controllers.MirrorName(long+"y", "erin"); a == b {
		t.Errorf("two long client names sharing a prefix got the same mirror name %s", a)
	}
}

func findCondition(conds []metav1.Condition, condType string) metav1.Condition {
	for _, c := range conds {
		if c.Type == condType {
			return c
		}
	}
	return metav1.Condition{}
}

func isTrue(conds []metav1.Condition, condType string) bool {
	return findCondition(conds, condType).Status == metav1.ConditionTrue
}

// Whoever can write an OAuthClient's status cannot point a ConsentGrant at another
// namespace's client: grants are put and revoked only on clients the token server
// says belong to the grant's namespace.
func TestForgedClientIDInStatusReachesNoOtherClient(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	victimNS := namespace(t, "tenant-a", admittedLabels)
	victim := webClient(victimNS, "web", platform, "https://app.tenant-a.example.com/cb", nil)
	if err := k8s.Create(ctx, victim); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, victim, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	// The victim's user consented in the browser.
	if _, err := admin.PutGrant(ctx, &adminapi.Grant{ClientID: victim.Status.ClientID, Subject: "bob",
		Scopes: []string{"zones.read"}, Source: adminapi.SourceBrowser}); err != nil {
		t.Fatal(err)
	}

	// A first-party tenant whose OAuthClient the operator refused, with its status
	// then rewritten to claim the victim's ID and Ready.
	attackerNS := namespace(t, "tenant-x", firstPartyLabels)
	forged := webClient(attackerNS, "web", platform, "https://evil.example.com/cb", func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.ClientID = "not-in-range"
	})
	if err := k8s.Create(ctx, forged); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, forged, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonClientIDNotAllowed)
	forged.Status.ClientID = victim.Status.ClientID
	forged.Status.Conditions = []metav1.Condition{{Type: oauthv1alpha1.ConditionReady, Status: metav1.ConditionTrue,
		Reason: controllers.ReasonSynced, Message: "forged", LastTransitionTime: metav1.Now()}}
	if err := k8s.Status().Update(ctx, forged); err != nil {
		t.Fatal(err)
	}
	// A declared grant would pre-approve consent to the victim's client for alice;
	// deleting one for bob would revoke bob's consent.
	pre := grant(attackerNS, "web", "alice", "zones.read")
	revoke := grant(attackerNS, "web", "bob", "zones.read")
	for _, cg := range []*oauthv1alpha1.ConsentGrant{pre, revoke} {
		if err := k8s.Create(ctx, cg); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, cg, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonClientIDConflict)
	}
	if gs := serverGrants(t, victim.Status.ClientID, "alice"); len(gs) != 0 {
		t.Errorf("a forged status pre-approved consent to another namespace's client: %+v", gs)
	}
	if err := k8s.Delete(ctx, revoke); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the attacker's ConsentGrant is gone", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(revoke), revoke))
	}, nil)
	if gs := serverGrants(t, victim.Status.ClientID, "bob"); len(gs) != 1 {
		t.Errorf("deleting the attacker's ConsentGrant revoked the victim's user's consent: %+v", gs)
	}
}
