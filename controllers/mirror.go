package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
)

// indexRegisteredID is "<server> <status.clientID>": the OAuthClient that registered
// a client ID on a server. Client IDs are unique per server, not across servers.
const indexRegisteredID = "oauthclient.registeredClientID"

// Mirror follows each Ready TokenServer's consent and revocation log and keeps a
// ConsentGrant (labelled oauth.kubeoauth.io/source=mirrored) for every consent a user
// gave in the browser, in the client's namespace, so that `kubectl get consentgrants`
// shows it within seconds and deleting it revokes it. A consent revoked on the
// connected-apps page makes its resource go. It runs on the leader only.
type Mirror struct {
	client.Client
	// Secrets reads the Secrets the reconciler needs (see CacheOptions).
	Secrets *SecretReader
	// Poll is how often the list of TokenServers is checked for new ones.
	Poll time.Duration
	// Recorder records, on the OAuthClient, a grant that could not be mirrored.
	Recorder events.EventRecorder

	mu        sync.Mutex
	followers map[string]context.CancelFunc
}

// NeedLeaderElection: one mirror writes at a time.
func (m *Mirror) NeedLeaderElection() bool { return true }

// Start runs until ctx ends.
func (m *Mirror) Start(ctx context.Context) error {
	m.followers = map[string]context.CancelFunc{}
	t := time.NewTicker(m.Poll)
	defer t.Stop()
	for {
		m.refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// refresh starts a follower for each Ready TokenServer and stops those of servers that
// went away or changed their admin endpoint or database.
func (m *Mirror) refresh(ctx context.Context) {
	var list oauthv1alpha1.TokenServerList
	if err := m.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "mirror: listing TokenServers")
		return
	}
	want := map[string]oauthv1alpha1.TokenServer{}
	for _, ts := range list.Items {
		if meta.IsStatusConditionTrue(ts.Status.Conditions, oauthv1alpha1.ConditionReady) {
			want[followerKey(&ts)] = ts
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, cancel := range m.followers {
		if _, ok := want[key]; !ok {
			cancel()
			delete(m.followers, key)
		}
	}
	for key, ts := range want {
		if _, ok := m.followers[key]; !ok {
			fctx, cancel := context.WithCancel(ctx)
			m.followers[key] = cancel
			go m.follow(fctx, ts)
		}
	}
}

// followerKey names what a follower follows: a server's event log is that of its
// active database, not of its admin endpoint. A Copy upgrade's cutover moves the
// serving version to another database (status.database) behind the same endpoint;
// the follower then starts over on the new one: a full pass over its grants, then
// its log from the end. Nothing is missed (the pass sees every grant) and nothing is
// mirrored twice (the pass only makes each ConsentGrant what it should be).
func followerKey(ts *oauthv1alpha1.TokenServer) string {
	key := ts.Namespace + "/" + ts.Name + " " + ts.Status.AdminEndpoint
	if db := ts.Status.Database; db != nil {
		key += " " + db.SecretName + "/" + db.Key
	}
	return key
}

// eventsWait is how long one long poll of the event log waits for an event. It stays
// below adminHTTP's timeout: a poll that outlived it failed every time, and each
// failure started the follower over (a full pass over the server's grants, after 2 s).
const eventsWait = 8 * time.Second

// follow mirrors one server: it finds the end of the log, reconciles every grant once,
// then applies new events as they come, starting over after an error.
func (m *Mirror) follow(ctx context.Context, ts oauthv1alpha1.TokenServer) {
	lg := log.FromContext(ctx).WithValues("tokenserver", ts.Namespace+"/"+ts.Name)
	for ctx.Err() == nil {
		if err := m.followOnce(ctx, &ts); err != nil && ctx.Err() == nil {
			lg.Info("mirror: following the event log failed; retrying", "err", err.Error())
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
}

func (m *Mirror) followOnce(ctx context.Context, ts *oauthv1alpha1.TokenServer) error {
	admin, err := adminClientFor(ctx, m.Secrets, ts)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	var cursor int64
	for { // the end of the log, so that nothing after the full pass below is missed
		evs, err := admin.Events(ctx, cursor, 0)
		if err != nil {
			return fmt.Errorf("read the event log from %d: %w", cursor, err)
		}
		if len(evs.Events) == 0 {
			break
		}
		cursor = evs.Next
	}
	clients, err := admin.ListClients(ctx)
	if err != nil {
		return fmt.Errorf("list clients: %w", err)
	}
	owners := make(map[string]string, len(clients))
	for _, c := range clients {
		owners[c.ID] = c.OwnerNamespace
	}
	grants, err := admin.ListGrants(ctx, "", "")
	if err != nil {
		return fmt.Errorf("list grants: %w", err)
	}
	live := map[string]bool{}
	for _, g := range grants {
		live[g.ClientID+"\x00"+g.Subject] = true
		if g.Source == adminapi.SourceBrowser {
			// One grant that cannot be mirrored must not hold up everyone else's.
			m.record(ctx, ts, g.ClientID, owners[g.ClientID], g.Subject, m.ensure(ctx, ts, owners[g.ClientID], g))
		}
	}
	if err := m.dropMissing(ctx, ts, live); err != nil {
		return err
	}
	for ctx.Err() == nil {
		evs, err := admin.Events(ctx, cursor, eventsWait)
		if err != nil {
			return fmt.Errorf("read the event log from %d: %w", cursor, err)
		}
		for _, ev := range evs.Events {
			m.apply(ctx, ts, admin, ev)
		}
		cursor = evs.Next
	}
	return nil
}

// apply mirrors one event; a failure is recorded for its grant and the log goes on.
func (m *Mirror) apply(ctx context.Context, ts *oauthv1alpha1.TokenServer, admin *adminapi.HTTPClient, ev adminapi.Event) {
	if ev.Kind != adminapi.EventConsentGiven && ev.Kind != adminapi.EventGrantRevoked {
		return
	}
	c, err := admin.GetClient(ctx, ev.ClientID)
	if errors.Is(err, adminapi.ErrNotFound) {
		return // deleted since: nothing of it to mirror
	}
	if err != nil {
		m.record(ctx, ts, ev.ClientID, "", ev.Subject, err)
		return
	}
	switch ev.Kind {
	case adminapi.EventConsentGiven:
		grants, err := admin.ListGrants(ctx, ev.ClientID, ev.Subject)
		for _, g := range grants {
			if err == nil && g.Source == adminapi.SourceBrowser {
				err = m.ensure(ctx, ts, c.OwnerNamespace, g)
				break
			}
		}
		m.record(ctx, ts, ev.ClientID, c.OwnerNamespace, ev.Subject, err)
	case adminapi.EventGrantRevoked:
		m.record(ctx, ts, ev.ClientID, c.OwnerNamespace, ev.Subject, m.remove(ctx, ts, c.OwnerNamespace, ev.ClientID, ev.Subject))
	}
}

// ReasonMirrorFailed: a consent given in the browser could not be mirrored.
const ReasonMirrorFailed = "MirrorFailed"

// record logs a grant that could not be mirrored and says so in an event on its
// OAuthClient, when there is one.
func (m *Mirror) record(ctx context.Context, ts *oauthv1alpha1.TokenServer, clientID, ownerNS, subject string, err error) {
	if err == nil {
		return
	}
	log.FromContext(ctx).Error(err, "mirror: a consent grant could not be mirrored", "tokenserver", ts.Namespace+"/"+ts.Name,
		"clientID", clientID, "subject", subject)
	if m.Recorder == nil {
		return
	}
	if oc, lerr := m.owner(ctx, ts, ownerNS, clientID); lerr == nil && oc != nil {
		m.Recorder.Eventf(oc, nil, corev1.EventTypeWarning, ReasonMirrorFailed, "Mirror",
			"the consent of %s could not be mirrored as a ConsentGrant: %v", subject, err)
	}
}

// MirrorName is the mirrored ConsentGrant's name: the OAuthClient's name and a hash of
// the subject (subjects need not be valid names). It is always a valid object name: a
// name that would pass 253 characters keeps a prefix of the client's name and a hash
// of both, so that two long client names sharing the prefix still differ.
func MirrorName(clientName, subject string) string {
	sum := sha256.Sum256([]byte(subject))
	if name := fmt.Sprintf("%s-%s", clientName, hex.EncodeToString(sum[:5])); len(name) <= validation.DNS1123SubdomainMaxLength {
		return name
	}
	sum = sha256.Sum256([]byte(clientName + "\x00" + subject))
	suffix := "-" + hex.EncodeToString(sum[:8])
	prefix := strings.TrimRight(clientName[:validation.DNS1123SubdomainMaxLength-len(suffix)], "-.")
	return prefix + suffix
}

// owner is the OAuthClient that registered clientID on ts, in ownerNS: the namespace
// the token server says owns it. A client ID is unique per server and an owner never
// changes, so at most one object matches; none when ownerNS is unknown.
func (m *Mirror) owner(ctx context.Context, ts *oauthv1alpha1.TokenServer, ownerNS, clientID string) (*oauthv1alpha1.OAuthClient, error) {
	if ownerNS == "" {
		return nil, nil
	}
	var list oauthv1alpha1.OAuthClientList
	key := serverClientKey(types.NamespacedName{Namespace: ts.Namespace, Name: ts.Name}, clientID)
	if err := m.List(ctx, &list, client.InNamespace(ownerNS), client.MatchingFields{indexRegisteredID: key}); err != nil {
		return nil, fmt.Errorf("list the OAuthClients in %s that registered %s: %w", ownerNS, clientID, err)
	}
	switch len(list.Items) {
	case 0:
		return nil, nil
	case 1:
		return &list.Items[0], nil
	}
	return nil, fmt.Errorf("%d OAuthClients in %s claim client ID %s", len(list.Items), ownerNS, clientID)
}

// ensure creates or updates the mirrored ConsentGrant of g, unless the client is not
// one of ours or a declared grant already stands for it.
func (m *Mirror) ensure(ctx context.Context, ts *oauthv1alpha1.TokenServer, ownerNS string, g adminapi.Grant) error {
	oc, err := m.owner(ctx, ts, ownerNS, g.ClientID)
	if err != nil || oc == nil {
		return err
	}
	// A declared grant of the subject stands for the consent: looked up by its key,
	// not among the namespace's grants, which a full pass would read once per grant.
	var declared oauthv1alpha1.ConsentGrantList
	if err := m.List(ctx, &declared, client.InNamespace(oc.Namespace),
		client.MatchingFields{indexDeclaredGrant: declaredGrantKey(oc.Name, g.Subject)}); err != nil {
		return fmt.Errorf("list the ConsentGrants in %s of %s for %s: %w", oc.Namespace, oc.Name, g.Subject, err)
	}
	if len(declared.Items) > 0 {
		return nil
	}
	name := MirrorName(oc.Name, g.Subject)
	want := make([]oauthv1alpha1.Scope, 0, len(g.Scopes))
	for _, s := range g.Scopes {
		want = append(want, oauthv1alpha1.Scope(s))
	}
	var cg oauthv1alpha1.ConsentGrant
	err = m.Get(ctx, types.NamespacedName{Namespace: oc.Namespace, Name: name}, &cg)
	switch {
	case apierrors.IsNotFound(err):
		cg = oauthv1alpha1.ConsentGrant{ObjectMeta: metav1.ObjectMeta{Namespace: oc.Namespace, Name: name,
			Labels: map[string]string{oauthv1alpha1.LabelSource: oauthv1alpha1.SourceMirrored}},
			Spec: oauthv1alpha1.ConsentGrantSpec{ClientRef: oauthv1alpha1.LocalObjectReference{Name: oc.Name},
				Subject: g.Subject, Scopes: want}}
		if err := m.Create(ctx, &cg); client.IgnoreAlreadyExists(err) != nil {
			return fmt.Errorf("create ConsentGrant %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("get ConsentGrant %s: %w", name, err)
	case !mirrored(&cg) || cg.Spec.ClientRef.Name != oc.Name || cg.Spec.Subject != g.Subject:
		// Someone else's object under the mirror's name: not ours to change.
		return fmt.Errorf("ConsentGrant %s, the name of the mirror of %s's consent to %s, is another grant", name, g.Subject, oc.Name)
	case !slices.Equal(cg.Spec.Scopes, want):
		cg.Spec.Scopes = want
		if err := m.Update(ctx, &cg); err != nil {
			return fmt.Errorf("update ConsentGrant %s: %w", name, err)
		}
	}
	return nil
}

// remove deletes the mirrored ConsentGrant of (clientID, subject), if any.
func (m *Mirror) remove(ctx context.Context, ts *oauthv1alpha1.TokenServer, ownerNS, clientID, subject string) error {
	oc, err := m.owner(ctx, ts, ownerNS, clientID)
	if err != nil || oc == nil {
		return err
	}
	cg := &oauthv1alpha1.ConsentGrant{ObjectMeta: metav1.ObjectMeta{Namespace: oc.Namespace, Name: MirrorName(oc.Name, subject)}}
	switch err := m.Get(ctx, client.ObjectKeyFromObject(cg), cg); {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("get ConsentGrant %s: %w", cg.Name, err)
	case !mirrored(cg):
		return nil
	}
	if err := m.Delete(ctx, cg); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete ConsentGrant %s: %w", cg.Name, err)
	}
	return nil
}

// dropMissing deletes mirrored ConsentGrants of ts's clients whose grant is gone.
func (m *Mirror) dropMissing(ctx context.Context, ts *oauthv1alpha1.TokenServer, live map[string]bool) error {
	var list oauthv1alpha1.ConsentGrantList
	if err := m.List(ctx, &list, client.MatchingLabels{oauthv1alpha1.LabelSource: oauthv1alpha1.SourceMirrored}); err != nil {
		return fmt.Errorf("list mirrored ConsentGrants: %w", err)
	}
	for _, cg := range list.Items {
		var oc oauthv1alpha1.OAuthClient
		if err := m.Get(ctx, types.NamespacedName{Namespace: cg.Namespace, Name: cg.Spec.ClientRef.Name}, &oc); err != nil {
			continue
		}
		server := types.NamespacedName{Namespace: ts.Namespace, Name: ts.Name}
		if oc.Status.ClientID == "" || clientspec.Server(&oc) != server || live[oc.Status.ClientID+"\x00"+cg.Spec.Subject] {
			continue
		}
		if err := m.Delete(ctx, &cg); client.IgnoreNotFound(err) != nil {
			log.FromContext(ctx).Error(err, "mirror: a revoked consent's ConsentGrant could not be deleted",
				"consentgrant", cg.Namespace+"/"+cg.Name)
		}
	}
	return nil
}
