package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
	"github.com/kubeoauth/kubeoauth/internal/testing/tcpproxy"
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
		ts.Spec.External.OwnsAllClients = true
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
	if note := waitWarning(t, outsiderNS, "web", controllers.ReasonClientIDNotAllowed); !strings.Contains(note, outsiderNS+"_") {
		t.Errorf("event %q does not say which prefix is allowed", note)
	}

	// A namespace whose name is a prefix of the victim's: the victim's derived ID used
	// to be in its range; it is refused before anything is pushed.
	overlap := attack(attackerNS, "web")
	waitCondition(t, overlap, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonClientIDNotAllowed)
	if overlap.Status.ClientID != "" {
		t.Errorf("a refused client recorded client ID %q as registered", overlap.Status.ClientID)
	}

	// An ID the operator lets through but another namespace holds (the platform's
	// namespace may choose IDs such as a tenant's legacy "<namespace>-…" one): the
	// token server refuses to change the owner (409), and the operator says whose it is.
	legacy := victimNS + "-legacy"
	if _, err := admin.PutClient(ctx, &adminapi.Client{ID: legacy, OwnerNamespace: victimNS, Secret: "legacy-secret-0123456789abcdefghijkl",
		ClientMetadata: adminapi.ClientMetadata{Name: "Legacy", GrantTypes: []string{"client_credentials"},
			TokenEndpointAuthMethod: "client_secret_basic"}}); err != nil {
		t.Fatal(err)
	}
	setLabels(t, platform, admittedLabels)
	platformClash := webClient(platform, "legacy", platform, evil, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = legacy })
	if err := k8s.Create(ctx, platformClash); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, platformClash, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonClientIDConflict)
	ready := findCondition(platformClash.Status.Conditions, oauthv1alpha1.ConditionReady)
	if !strings.Contains(ready.Message, legacy) || !strings.Contains(ready.Message, victimNS) {
		t.Errorf("Ready message %q should name the client ID and its owner %s", ready.Message, victimNS)
	}
	waitWarning(t, platform, "legacy", controllers.ReasonClientIDConflict)
	wantRegistered(t, legacy, victimNS, "the victim's legacy client after the clash")

	// A namespace the TokenServer does not admit.
	rogue := attack(rogueNS, "web")
	waitCondition(t, rogue, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNamespaceNotAllowed)
	waitWarning(t, rogueNS, "web", controllers.ReasonNamespaceNotAllowed)
	victimIntact(t, victim, good)

	// Deleting the attackers deletes nothing of the victim's.
	for _, oc := range []*oauthv1alpha1.OAuthClient{outsider, overlap, rogue, platformClash} {
		if err := k8s.Delete(ctx, oc); err != nil {
			t.Fatal(err)
		}
	}
	for _, oc := range []*oauthv1alpha1.OAuthClient{outsider, overlap, rogue, platformClash} {
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

// The review's squat: namespace sq-… registers, before it exists, the derived ID of
// the OAuthClient "web" of namespace sq-…-pay-… (computable by anyone). It is refused,
// and the victim registers its client when it comes, with its own derived ID.
func TestPrefixSquat(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	attackerNS := namespace(t, "sq", admittedLabels)
	victimNS := namespace(t, attackerNS+"-pay", admittedLabels)
	victim := webClient(victimNS, "web", platform, "https://pay.example.com/cb", nil)
	squat := webClient(attackerNS, "pay", platform, "https://evil.example.com/cb", func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.ClientID = clientspec.ClientID(victim)
	})
	if err := k8s.Create(ctx, squat); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, squat, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonClientIDNotAllowed)
	if _, err := admin.GetClient(ctx, clientspec.ClientID(victim)); !errors.Is(err, adminapi.ErrNotFound) {
		t.Fatalf("the squatted ID is on the token server: %v", err)
	}
	if err := k8s.Create(ctx, victim); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, victim, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	victimIntact(t, victim, "https://pay.example.com/cb")

	// The attacker's own range still works.
	own := newClient(attackerNS, "own", platform, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = attackerNS + "_pay" })
	if err := k8s.Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, own, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	if _, err := token(t, attackerNS, "own-oauth"); err != nil {
		t.Errorf("a custom ID in the namespace's range: %v", err)
	}
}

// Two OAuthClients of one namespace that want the same ID: the token server cannot
// tell them apart (same owner), so the operator lets the first keep it.
func TestSameNamespaceClientIDClash(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	ns := namespace(t, "tenant-a", admittedLabels)
	first := newClient(ns, "first", platform, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = ns + "_shared" })
	if err := k8s.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, first, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	second := newClient(ns, "second", platform, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = ns + "_shared" })
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
	waitWarning(t, ns, cg.Name, controllers.ReasonRevoked)

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

// waitServerWarning waits for a Warning event with reason on a TokenServer whose note
// names every part. Any TokenServer: the suite's share one token
// server (one issuer), and whichever sweeps first reports it.
func waitServerWarning(t *testing.T, reason string, parts ...string) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("a Warning event %s on a TokenServer naming %v", reason, parts), func() bool {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list); err != nil {
			return false
		}
	events:
		for _, e := range list.Items {
			if e.Regarding.Kind != "TokenServer" || e.Reason != reason || e.Type != corev1.EventTypeWarning {
				continue
			}
			for _, p := range parts {
				if !strings.Contains(e.Note, p) {
					continue events
				}
			}
			return true
		}
		return false
	}, func() string {
		var list eventsv1.EventList
		_ = k8s.List(context.Background(), &list)
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Kind == "TokenServer" && e.Type == corev1.EventTypeWarning {
				seen = append(seen, e.Reason+": "+e.Note)
			}
		}
		return fmt.Sprintf("TokenServer warnings: %q", seen)
	})
}

func deleteAndWait(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, obj.GetNamespace()+"/"+obj.GetName()+" is gone", func() bool {
		return apierrors.IsNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj))
	}, nil)
}

// The review's first route: a first-party tenant keeps a skipConsent client, a
// declared grant and a token past the loss of its status by deleting its
// OAuthClients with deletionPolicy Orphan. Deleting the ConsentGrant after its
// OAuthClient still revokes the grant; losing first-party status deletes the orphan
// that skips consent; losing admission deletes every client the namespace owns on the
// server, and their tokens die. Each sweep leaves a Warning event on the TokenServer.
func TestOrphanedClientsDoNotOutliveTheirNamespacesStatus(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	ns := namespace(t, "tenant-o", firstPartyLabels)
	orphan := func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.DeletionPolicy = oauthv1alpha1.DeletionPolicyOrphan }
	trusted := newClient(ns, "trusted", platform, func(oc *oauthv1alpha1.OAuthClient) {
		orphan(oc)
		oc.Spec.SkipConsent = true
	})
	plain := newClient(ns, "plain", platform, orphan)
	for _, oc := range []*oauthv1alpha1.OAuthClient{trusted, plain} {
		if err := k8s.Create(ctx, oc); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	}
	trustedID, plainID := trusted.Status.ClientID, plain.Status.ClientID
	cg := grant(ns, "trusted", "alice", "zones.read")
	// Left in place when its OAuthClient goes: nothing in Kubernetes revokes it then.
	kept := grant(ns, "plain", "bob", "zones.read")
	for _, g := range []*oauthv1alpha1.ConsentGrant{cg, kept} {
		if err := k8s.Create(ctx, g); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, g, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	}
	tok, err := token(t, ns, "plain-oauth")
	if err != nil {
		t.Fatal(err)
	}

	// Orphaned: both stay on the server, as deletionPolicy says.
	deleteAndWait(t, trusted)
	deleteAndWait(t, plain)
	if got, err := admin.GetClient(ctx, trustedID); err != nil || !got.SkipConsent {
		t.Fatalf("the orphaned first-party client: %+v, %v; want it kept with skipConsent", got, err)
	}

	// The ConsentGrant deleted after its OAuthClient: the grant goes all the same.
	deleteAndWait(t, cg)
	if gs := serverGrants(t, trustedID, "alice"); len(gs) != 0 {
		t.Errorf("a ConsentGrant deleted after its OAuthClient left its grant on the token server: %+v", gs)
	}

	// First-party status lost: no client of the namespace skips consent any more.
	setLabels(t, ns, admittedLabels)
	eventually(t, 10*time.Second, "no orphaned client of "+ns+" skips consent", func() bool {
		got, err := admin.GetClient(ctx, trustedID)
		return errors.Is(err, adminapi.ErrNotFound) || (err == nil && !got.SkipConsent)
	}, nil)
	waitServerWarning(t, controllers.ReasonSweptOrphan, ns, trustedID)
	eventually(t, 10*time.Second, "the orphan's declared grant revoked", func() bool {
		return len(serverGrants(t, plainID, "bob")) == 0
	}, nil)
	waitServerWarning(t, controllers.ReasonGrantSwept, ns, plainID, "bob")
	if _, err := admin.GetClient(ctx, plainID); err != nil {
		t.Errorf("an admitted namespace's orphan without skipConsent was deleted: %v", err)
	}

	// Admission lost: the namespace's orphan goes, and its token with it.
	setLabels(t, ns, nil)
	eventually(t, 10*time.Second, "the de-admitted namespace's orphan is gone from the token server", func() bool {
		_, err := admin.GetClient(ctx, plainID)
		return errors.Is(err, adminapi.ErrNotFound)
	}, nil)
	if active(t, tok) {
		t.Errorf("a token of the de-admitted namespace's orphan is still active")
	}
	waitServerWarning(t, controllers.ReasonSwept, ns, plainID)
}

// The review's second route: the namespace loses admission while the token server
// is unreachable, and the tenant deletes its OAuthClient then. The client does not
// stay behind: once the server is back it is gone, and its token is dead.
func TestDeAdmissionDuringAnOutage(t *testing.T) {
	ctx := context.Background()
	platform, ts, proxy := proxiedServer(t)
	ns := namespace(t, "tenant-u", admittedLabels)
	oc := newClient(ns, "app", platform, nil)
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	id := oc.Status.ClientID
	tok, err := token(t, ns, "app-oauth")
	if err != nil {
		t.Fatal(err)
	}

	proxy.Down()
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, "")
	setLabels(t, ns, nil)
	if err := k8s.Delete(ctx, oc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the OAuthClient's deletion has begun", func() bool {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(oc), oc)
		return apierrors.IsNotFound(err) || (err == nil && !oc.DeletionTimestamp.IsZero())
	}, nil)

	proxy.Up()
	eventually(t, 20*time.Second, "the client is gone from the token server once it is back", func() bool {
		_, err := admin.GetClient(ctx, id)
		return errors.Is(err, adminapi.ErrNotFound)
	}, nil)
	if active(t, tok) {
		t.Errorf("a token of the client deleted during the outage is still active")
	}
	eventually(t, 20*time.Second, "the OAuthClient is gone", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(oc), oc))
	}, nil)
}

// proxiedServer is a TokenServer owning all its server's clients and admitting the
// namespaces labelled for it, whose admin API is reached through a proxy the test
// can take down.
func proxiedServer(t *testing.T) (platform string, ts *oauthv1alpha1.TokenServer, proxy *tcpproxy.Proxy) {
	t.Helper()
	proxy = tcpproxy.Start(t, "127.0.0.1", "tcp", strings.TrimPrefix(admin.BaseURL, "http://"))
	platform = namespace(t, "platform", nil)
	externalServer(t, platform, func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.External.AdminURL = "http://" + proxy.Addr
		ts.Spec.External.OwnsAllClients = true
		ts.Spec.ClientNamespaces = &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{
			MatchLabels: map[string]string{labelClients: "allowed"}}}
	})
	ts = &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: platform, Name: "auth"}}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ts) })
	return platform, ts, proxy
}

// A namespace the TokenServer does not admit learns that, and nothing of the server's
// state: not whether it is Ready, nor its admin Secret or URL. The operator used to
// look at the server's readiness and admin credentials before its admission, so a
// tenant could probe another namespace's server through its OAuthClient's status.
func TestNotAdmittedNamespaceLearnsNothingOfTheServer(t *testing.T) {
	ctx := context.Background()
	platform, ts, proxy := proxiedServer(t)
	proxy.Down()
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, "")

	rogue := namespace(t, "tenant-probe", nil)
	oc := newClient(rogue, "app", platform, nil)
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNamespaceNotAllowed)
	note := waitWarning(t, rogue, "app", controllers.ReasonNamespaceNotAllowed)
	said := make([]string, 0, 1+len(oc.Status.Conditions))
	said = append(said, note)
	for _, c := range oc.Status.Conditions {
		said = append(said, c.Reason+": "+c.Message)
	}
	for _, s := range said {
		for _, secret := range []string{proxy.Addr, "auth-admin", "to be Ready", controllers.ReasonServerNotReady} {
			if strings.Contains(s, secret) {
				t.Errorf("a namespace the server does not admit is told %q", s)
			}
		}
	}
}

// The review's finding 6: a client registered by a pass whose status.clientID the next
// pass does not see (a stale cache, a lost status patch) is still deregistered when
// its namespace loses admission.
func TestDeAdmissionOfAClientWithoutRecordedID(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	ns := namespace(t, "tenant-s", admittedLabels)
	oc := newClient(ns, "app", platform, nil)
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	id := oc.Status.ClientID
	tok, err := token(t, ns, "app-oauth")
	if err != nil {
		t.Fatal(err)
	}
	// What the next pass would see: registered on the server, nothing in status.
	oc.Status.ClientID = ""
	if err := k8s.Status().Update(ctx, oc); err != nil {
		t.Fatal(err)
	}
	setLabels(t, ns, nil)
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNamespaceNotAllowed)
	eventually(t, 10*time.Second, "the client without a recorded ID is gone from the token server", func() bool {
		_, err := admin.GetClient(ctx, id)
		return errors.Is(err, adminapi.ErrNotFound)
	}, nil)
	if active(t, tok) {
		t.Errorf("a token of the de-admitted client is still active")
	}
}

// The second review's finding 2: two TokenServers of one external server, each
// admitting namespaces of its own. While the second's admin token Secret is being
// rotated, the first cannot know what the second admits: its sweep deletes nothing
// (a Warning SweepSkipped names the second), instead of judging the second's
// tenants "not admitted". The second names the server with a trailing slash on its
// issuer: still the same server.
func TestPeerBeingRotatedKeepsItsClients(t *testing.T) {
	ctx := context.Background()
	tenancyServer(t)
	second := namespace(t, "platform-b", nil)
	externalServer(t, second, func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Issuer = oauthv1alpha1.URL(issuer + "/")
		ts.Spec.ClientNamespaces = &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{
			MatchLabels: map[string]string{"oauth.kubeoauth.io/clients-b": "allowed"}}}
	})
	secondTS := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: second, Name: "auth"}}
	// Broken, it would stop every later test's sweep.
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), secondTS) })
	ns := namespace(t, "tenant-b", map[string]string{"oauth.kubeoauth.io/clients-b": "allowed"})
	oc := newClient(ns, "app", second, func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.DeletionPolicy = oauthv1alpha1.DeletionPolicyOrphan
	})
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	id := oc.Status.ClientID
	// An orphan: only the second TokenServer's policy keeps it.
	deleteAndWait(t, oc)

	var sec corev1.Secret
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: second, Name: "auth-admin"}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Data["token"] = []byte("the-next-admin-token-not-yet-on-the-server")
	if err := k8s.Update(ctx, &sec); err != nil {
		t.Fatal(err)
	}
	// A label change sweeps every TokenServer.
	setLabels(t, namespace(t, "bystander", nil), map[string]string{"touched": "true"})
	waitServerWarning(t, controllers.ReasonSweepSkipped, second+"/auth")
	wantRegistered(t, id, ns, "the second TokenServer's tenant's client after a sweep with that TokenServer unreadable")
}

// The second review's finding 1: on an external server, a client whose owner
// namespace does not exist in this cluster may be another cluster's, or an
// administrator's: even where this install says it owns all clients, the sweep does
// not judge it. The same pass deletes the client of a namespace that exists here and
// is not admitted.
func TestSweepLeavesClientsOfNamespacesNotInThisCluster(t *testing.T) {
	ctx := context.Background()
	tenancyServer(t)
	elsewhere := "elsewhere-" + strings.ToLower(strings.TrimPrefix(namespace(t, "x", nil), "x-"))
	here := namespace(t, "tenant-n", nil)
	put := func(id, owner string) {
		t.Helper()
		_, err := admin.PutClient(ctx, &adminapi.Client{ID: id, Secret: strings.Repeat("s", 40), OwnerNamespace: owner,
			ClientMetadata: adminapi.ClientMetadata{Name: id, GrantTypes: []string{"client_credentials"},
				Scopes: []string{"zones.read"}, TokenEndpointAuthMethod: "client_secret_basic"}})
		if err != nil {
			t.Fatal(err)
		}
	}
	put(elsewhere+"_app", elsewhere)
	put(here+"_app", here)
	setLabels(t, here, map[string]string{"touched": "true"})
	eventually(t, 20*time.Second, "the client of "+here+", not admitted, is swept", func() bool {
		_, err := admin.GetClient(ctx, here+"_app")
		return errors.Is(err, adminapi.ErrNotFound)
	}, nil)
	wantRegistered(t, elsewhere+"_app", elsewhere, "the client of a namespace not in this cluster after a sweep")
}

// The second review's finding 6: a custom client ID of the old "<namespace>-" rule,
// which this object registered before the rule changed, comes back with the
// namespace's admission: losing admission does not make it a new, refused, choice.
func TestLegacyClientIDSurvivesDeAdmission(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	ns := namespace(t, "tenant-l", admittedLabels)
	legacy := ns + "-app"
	oc := newClient(ns, "app", platform, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = legacy })
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonClientIDNotAllowed)
	// What an object registered by an operator of the old rule looks like.
	oc.Status.ClientID = legacy
	if err := k8s.Status().Update(ctx, oc); err != nil {
		t.Fatal(err)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(oc), oc); err != nil {
			return err
		}
		oc.Spec.ClientName = "Client app, touched"
		return k8s.Update(ctx, oc)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)

	setLabels(t, ns, nil)
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNamespaceNotAllowed)
	eventually(t, 10*time.Second, "the de-admitted legacy client is gone from the token server", func() bool {
		_, err := admin.GetClient(ctx, legacy)
		return errors.Is(err, adminapi.ErrNotFound)
	}, nil)

	setLabels(t, ns, admittedLabels)
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	wantRegistered(t, legacy, ns, "the legacy client after re-admission")
	if _, err := token(t, ns, "app-oauth"); err != nil {
		t.Errorf("the legacy client's credentials after re-admission: %v", err)
	}
}

// The second review's finding 7a: two TokenServers of one server, and a namespace
// only the second admits. An OAuthClient of the namespace on the first, refused,
// asks for the ID its sibling on the second registered: its deregistration does not
// delete the sibling's client.
func TestDeregistrationSparesASiblingOnAPeer(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	second := namespace(t, "platform-b", nil)
	externalServer(t, second, func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.ClientNamespaces = &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{
			MatchLabels: map[string]string{"oauth.kubeoauth.io/clients-b": "allowed"}}}
	})
	secondTS := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: second, Name: "auth"}}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), secondTS) })
	ns := namespace(t, "tenant-p", map[string]string{"oauth.kubeoauth.io/clients-b": "allowed"})
	id := ns + clientspec.CustomIDSeparator + "app"
	sibling := newClient(ns, "app", second, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = id })
	if err := k8s.Create(ctx, sibling); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, sibling, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)

	refused := newClient(ns, "same-id", platform, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = id })
	if err := k8s.Create(ctx, refused); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, refused, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNamespaceNotAllowed)
	wantRegistered(t, id, ns, "the sibling's client after the refused OAuthClient's deregistration")
	if _, err := token(t, ns, "app-oauth"); err != nil {
		t.Errorf("the sibling's credentials after the refused OAuthClient's deregistration: %v", err)
	}
}

// The second review's finding 7b: a ConsentGrant recorded before status.serverRef
// existed, whose OAuthClient is gone, asks every TokenServer to revoke its grant. A
// broken TokenServer elsewhere in the cluster (not Ready) does not keep its
// finalizer: the grant is revoked where it is, and the ConsentGrant goes.
func TestLegacyConsentGrantIgnoresABrokenTokenServer(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	broken := namespace(t, "broken", nil)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String()
	_ = closed.Close()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: broken, Name: "auth-admin"},
		StringData: map[string]string{"token": "some-other-servers-token"}}
	if err := k8s.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	brokenTS := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: broken, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: "https://elsewhere.example", External: &oauthv1alpha1.ExternalTokenServer{
			AdminURL: deadURL, Insecure: true, TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "auth-admin"}}}}
	if err := k8s.Create(ctx, brokenTS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), brokenTS) })
	waitCondition(t, brokenTS, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, "")

	ns := namespace(t, "tenant-g", firstPartyLabels)
	oc := newClient(ns, "app", platform, func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.DeletionPolicy = oauthv1alpha1.DeletionPolicyOrphan
	})
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	id := oc.Status.ClientID
	cg := grant(ns, "app", "alice", "zones.read")
	if err := k8s.Create(ctx, cg); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, cg, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	deleteAndWait(t, oc)
	// What a ConsentGrant of an older operator looks like.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(cg), cg); err != nil {
			return err
		}
		cg.Status.ServerRef = nil
		return k8s.Status().Update(ctx, cg)
	})
	if err != nil {
		t.Fatal(err)
	}
	deleteAndWait(t, cg)
	if gs := serverGrants(t, id, "alice"); len(gs) != 0 {
		t.Errorf("the legacy ConsentGrant's grant after its deletion: %+v", gs)
	}
}

// wantRegistered fails t unless the token server holds client id, owned by owner;
// what says which client the test means.
func wantRegistered(t *testing.T, id, owner, what string) {
	t.Helper()
	if got, err := admin.GetClient(context.Background(), id); err != nil || got.OwnerNamespace != owner {
		t.Errorf("%s: %+v, %v; want it registered, owned by %s", what, got, err, owner)
	}
}

// A tenant's OAuthClient whose spec.audience names another namespace's client ID (a
// token for it could pass for that app's users' ID tokens) is refused by the token
// server; the operator says which field and why, Stalled (nothing changes until a
// person edits the spec), and registers the client once the audience is a URL.
func TestAudienceNamingAnotherNamespacesClientIsRefused(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	victimNS := namespace(t, "aud-victim", admittedLabels)
	attackerNS := namespace(t, "aud-tenant", admittedLabels)
	victim := webClient(victimNS, "web", platform, "https://app.victim.example.com/cb", nil)
	if err := k8s.Create(ctx, victim); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, victim, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)

	attacker := webClient(attackerNS, "web", platform, "https://app.tenant.example.com/cb", func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.Audience = []string{"https://api.tenant.example.com", victim.Status.ClientID}
	})
	if err := k8s.Create(ctx, attacker); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, attacker, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonClientRefused)
	ready := findCondition(attacker.Status.Conditions, oauthv1alpha1.ConditionReady)
	if !strings.Contains(ready.Message, "spec.audience[1]") || !strings.Contains(ready.Message, "another namespace") {
		t.Errorf("Ready message %q should name spec.audience[1] and why", ready.Message)
	}
	if !isTrue(attacker.Status.Conditions, "Stalled") {
		t.Errorf("conditions %+v; want Stalled=True: only a person's edit can change it", attacker.Status.Conditions)
	}
	waitWarning(t, attackerNS, "web", controllers.ReasonClientRefused)

	patch := client.MergeFrom(attacker.DeepCopy())
	attacker.Spec.Audience = []string{"https://api.tenant.example.com"}
	if err := k8s.Patch(ctx, attacker, patch); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, attacker, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
}
