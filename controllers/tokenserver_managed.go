package controllers

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminpki"
	"github.com/kubeoauth/kubeoauth/internal/randsecret"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// Reasons of a bundled TokenServer's conditions.
const (
	ReasonWaitingForDatabase = "WaitingForDatabase"
	ReasonMigrating          = "Migrating"
	ReasonMigrationFailed    = "MigrationFailed"
	ReasonRollingOut         = "RollingOut"
	ReasonAvailable          = "Available"
	ReasonSecretMissing      = "SecretMissing"
	// ReasonInvalidSecret: a Secret the TokenServer names holds something its pods
	// could not use (a CA key without a certificate), which would crash-loop them.
	ReasonInvalidSecret = "InvalidSecret"
	// ReasonRefusedByAPIServer: the API server refused an object the operator builds
	// from the spec (a StatefulSet, a Job): invalid, or forbidden by an admission
	// policy or webhook, a quota or RBAC.
	ReasonRefusedByAPIServer = "RefusedByAPIServer"
)

// refusal is the pass's error for err, from writing (verb) the object kind/name. A
// refusal the same object meets again (invalid; forbidden by an admission policy or
// webhook, a quota, RBAC) needs a person: Stalled, naming what was refused and why,
// where retrying it with backoff would read Reconciling forever. It is looked at
// again with every condition error's requeue, since a policy is not watched.
func refusal(verb, kind, name string, err error) error {
	if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
		return needsHuman(ReasonRefusedByAPIServer, fmt.Sprintf(
			"the API server refused to %s %s %s (spec.pod, spec.database.managed.pod and spec.jobs shape it; the namespace's "+
				"admission policies and quotas judge it): %s", verb, kind, name, err.Error()))
	}
	return fmt.Errorf("%s %s %s: %w", verb, kind, name, err)
}

// fieldOwner is the server-side apply field manager of everything the operator builds.
const fieldOwner = client.FieldOwner("kubeoauth")

// Least privilege: applied objects need create and patch (server-side apply); what
// is watched needs get, list, watch; nothing is deleted by hand (owner references let
// the garbage collector do it).
// +kubebuilder:rbac:groups="",resources=configmaps;serviceaccounts,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=create;patch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=create;patch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// reconcileManaged runs a bundled token server's phases in order; each ends the pass
// with a waiting condition error while it waits. It returns the upgrade's
// conditions, if one ran or runs (see withUpgrade), and when to look again: the
// signing key's next rotation or the upgrade's next timer. pagesHash is the digest
// of the templates the pods mount (pages).
func (r *TokenServerReconciler) reconcileManaged(ctx context.Context, ts *oauthv1alpha1.TokenServer, pagesHash string) (
	[]metav1.Condition, time.Duration, error) {
	for _, obj := range []client.Object{resources.ServiceAccount(ts), resources.ConfigMap(ts)} {
		if err := r.apply(ctx, ts, obj); err != nil {
			return nil, 0, err
		}
	}
	admin, err := r.ensureSecret(ctx, ts, resources.AdminObjectName(ts), func() (*corev1.Secret, error) {
		token, err := randsecret.New(32)
		return resources.AdminSecret(ts, token), err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("admin token: %w", err)
	}
	adminTLS, err := r.ensureAdminTLS(ctx, ts)
	if err != nil {
		return nil, 0, err
	}
	if r.Operator.Namespace != "" {
		policies := []client.Object{resources.ServerNetworkPolicy(ts, r.Operator)}
		if resources.ManagedDatabase(ts) {
			policies = append(policies, resources.DatabaseNetworkPolicy(ts))
		}
		for _, obj := range policies {
			if err := r.apply(ctx, ts, obj); err != nil {
				return nil, 0, err
			}
		}
	}
	// A new key would roll both colors' pods in the middle of moving traffic
	// between them: rotation waits for the upgrade to end.
	keys, nextRotation, err := r.ensureKeys(ctx, ts, upgrade.HoldsRollouts(ts.Spec.Upgrade, &ts.Status, r.Clock.Now()))
	if err != nil {
		return nil, 0, err
	}
	if err := r.database(ctx, ts); err != nil {
		return nil, nextRotation, err
	}
	if err := r.upstreamSecret(ctx, ts); err != nil {
		return nil, nextRotation, err
	}
	// The first install (no StatefulSet of either color) migrates fully before its
	// first pod; from then on the upgrade migrates in steps (plan, expand,
	// contract) and never under a version that cannot run on the result. Which
	// color is active is for the upgrade to say, from status and the facts
	// (status may be lost): not defaulted here.
	first, err := r.firstInstall(ctx, ts)
	if err != nil {
		return nil, nextRotation, err
	}
	if first {
		if err := r.migrations(ctx, ts); err != nil {
			return nil, nextRotation, err
		}
	}
	hash, err := r.configHash(ctx, ts, keys, admin, adminTLS)
	if err != nil {
		return nil, nextRotation, err
	}
	in := resources.Inputs{HasPreviousKey: len(keys.Data[resources.KeyPreviousSigningKey]) > 0, ConfigHash: hash,
		PagesHash: pagesHash}
	conds, nextUpgrade, err := r.upgradeStep(ctx, ts, in)
	next := soonest(nextRotation, nextUpgrade)
	if err != nil {
		return conds, next, err
	}
	if err := r.apply(ctx, ts, resources.PodDisruptionBudget(ts)); err != nil {
		return conds, next, err
	}
	ts.Status.TargetImage = ts.Spec.Image
	ts.Status.AdminEndpoint = resources.AdminEndpoint(ts)
	return conds, next, r.serving(ctx, ts)
}

// firstInstall says whether neither color's StatefulSet exists yet.
func (r *TokenServerReconciler) firstInstall(ctx context.Context, ts *oauthv1alpha1.TokenServer) (bool, error) {
	for _, c := range []string{resources.ColorBlue, resources.ColorGreen} {
		name := resources.StatefulSetName(ts, c)
		err := r.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: name}, &appsv1.StatefulSet{})
		if err == nil {
			return false, nil
		}
		if !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("get StatefulSet %s: %w", name, err)
		}
	}
	return true, nil
}

// serving checks the active color: its StatefulSet's pods ready and up to date (an
// upgrade moves them itself) and the admin API answering through the Service.
func (r *TokenServerReconciler) serving(ctx context.Context, ts *oauthv1alpha1.TokenServer) error {
	color := ts.Status.ActiveColor
	if color == "" { // the upgrade's intent could not be written yet
		color = resources.ColorBlue
	}
	var sts appsv1.StatefulSet
	if err := r.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: resources.StatefulSetName(ts, color)}, &sts); err != nil {
		if apierrors.IsNotFound(err) { // just applied; the cache has not seen it yet
			return waiting(ReasonRollingOut, "creating StatefulSet "+resources.StatefulSetName(ts, color))
		}
		return fmt.Errorf("get StatefulSet %s: %w", resources.StatefulSetName(ts, color), err)
	}
	ts.Status.ReadyReplicas = sts.Status.ReadyReplicas
	want := ptr.Deref(ts.Spec.Replicas, 1)
	pods := podWait{owner: &sts, kind: "StatefulSet", created: sts.Status.Replicas, want: want}
	if sts.Status.ReadyReplicas == 0 {
		return waiting(ReasonRollingOut, fmt.Sprintf("waiting for StatefulSet %s: 0 of %d pods ready", sts.Name, want)).waitingFor(pods)
	}
	adm, err := adminClientFor(ctx, r.Secrets, ts)
	if err == nil {
		if err = adm.Health(ctx); err != nil {
			err = fmt.Errorf("admin API health check: %w", err)
		}
	}
	if err != nil && !errors.Is(err, errServerNotReady) {
		err = fmt.Errorf("%w: %w", errServerNotReady, err)
	}
	if err != nil {
		return err
	}
	if rolled := sts.Status.ObservedGeneration >= sts.Generation && sts.Status.UpdatedReplicas == want &&
		sts.Status.ReadyReplicas == want; !rolled && !upgrade.Active(&ts.Status) {
		pods.ready = min(sts.Status.ReadyReplicas, sts.Status.UpdatedReplicas)
		return waiting(ReasonRollingOut, fmt.Sprintf("serving; StatefulSet %s has %d of %d pods ready and up to date",
			sts.Name, pods.ready, want)).waitingFor(pods)
	}
	return nil
}

// apply server-side applies obj, owned by ts. An unchanged object is not written.
func (r *TokenServerReconciler) apply(ctx context.Context, ts *oauthv1alpha1.TokenServer, obj client.Object) error {
	gvk, err := apiutil.GVKForObject(obj, r.Scheme())
	if err != nil {
		return fmt.Errorf("apply %T %s: %w", obj, obj.GetName(), err)
	}
	if err := controllerutil.SetControllerReference(ts, obj, r.Scheme()); err != nil {
		return fmt.Errorf("apply %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("apply %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	// Typed objects carry empty status and creationTimestamp: not ours to apply.
	delete(u, "status")
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u}),
		fieldOwner, client.ForceOwnership); err != nil {
		return refusal("apply", gvk.Kind, obj.GetName(), err)
	}
	return nil
}

// ensureSecret returns the Secret name, creating it with build the first time.
// Generated Secrets are never rewritten: a pass must not change a password.
func (r *TokenServerReconciler) ensureSecret(ctx context.Context, ts *oauthv1alpha1.TokenServer, name string,
	build func() (*corev1.Secret, error)) (*corev1.Secret, error) {
	var sec corev1.Secret
	err := r.Secrets.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: name}, &sec)
	if err == nil {
		return &sec, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get Secret %s: %w", name, err)
	}
	fresh, err := build()
	if err != nil {
		return nil, fmt.Errorf("generate Secret %s: %w", name, err)
	}
	if err := controllerutil.SetControllerReference(ts, fresh, r.Scheme()); err != nil {
		return nil, fmt.Errorf("create Secret %s: %w", name, err)
	}
	if err := r.Create(ctx, fresh); err != nil {
		return nil, fmt.Errorf("create Secret %s: %w", name, err)
	}
	r.Recorder.Eventf(ts, nil, corev1.EventTypeNormal, "SecretCreated", "Create", "generated Secret %s", name)
	return fresh, nil
}

// ensureAdminTLS returns the admin API's TLS Secret: made with a new CA the first
// time; the serving certificate issued again when it nears its end, no longer
// names the admin Service or no longer matches the CA. The Secret's change rolls
// the pods (config hash); they keep serving the old certificate, which the same CA
// signed, until they roll.
func (r *TokenServerReconciler) ensureAdminTLS(ctx context.Context, ts *oauthv1alpha1.TokenServer) (*corev1.Secret, error) {
	now := r.Clock.Now()
	names := resources.AdminDNSNames(ts)
	caName := fmt.Sprintf("kubeoauth admin CA %s/%s", ts.Namespace, ts.Name)
	issue := func(caCert, caKey []byte) (*corev1.Secret, error) {
		cert, key, err := adminpki.IssueServing(caCert, caKey, names, now)
		if err != nil {
			return nil, fmt.Errorf("issue the admin API certificate: %w", err)
		}
		return resources.AdminTLSSecret(ts, caCert, caKey, cert, key), nil
	}
	sec, err := r.ensureSecret(ctx, ts, resources.AdminTLSSecretName(ts), func() (*corev1.Secret, error) {
		caCert, caKey, err := adminpki.NewCA(caName, now)
		if err != nil {
			return nil, fmt.Errorf("make the admin API CA: %w", err)
		}
		return issue(caCert, caKey)
	})
	if err != nil {
		return nil, err
	}
	caCert, caKey := sec.Data[resources.KeyCACert], sec.Data[resources.KeyCAKey]
	if !adminpki.ValidCA(caCert, caKey, now) {
		// A CA that is broken or near its end: a new one. Pods still serving a
		// certificate of the old CA fail the operator's checks until they roll.
		if caCert, caKey, err = adminpki.NewCA(caName, now); err != nil {
			return nil, fmt.Errorf("renew the admin API CA: %w", err)
		}
	}
	why := adminpki.Reissue(sec.Data[resources.KeyTLSCert], sec.Data[resources.KeyTLSKey], caCert, names, now)
	if why == "" {
		return sec, nil
	}
	fresh, err := issue(caCert, caKey)
	if err != nil {
		return nil, err
	}
	sec.Data = fresh.Data
	// The update carries the resourceVersion read: a stale copy fails instead of
	// issuing twice.
	if err := r.Update(ctx, sec); err != nil {
		return nil, fmt.Errorf("update Secret %s: %w", sec.Name, err)
	}
	r.Recorder.Eventf(ts, nil, corev1.EventTypeNormal, "AdminCertificateIssued", "Issue",
		"new admin API certificate in Secret %s: %s", sec.Name, why)
	return sec, nil
}

// ensureKeys returns the keys Secret, made or rotated as due (resources.PlanKeyRotation):
// the old key kept as the previous key so tokens it signed still verify. It returns
// when the next rotation is due.
//
// hold keeps a due rotation back (an upgrade runs); it is looked at again in a minute.
func (r *TokenServerReconciler) ensureKeys(ctx context.Context, ts *oauthv1alpha1.TokenServer, hold bool) (
	*corev1.Secret, time.Duration, error) {
	alg, now := resources.SigningAlgorithm(ts), r.Clock.Now()
	sec, err := r.ensureSecret(ctx, ts, resources.KeysSecretName(ts), func() (*corev1.Secret, error) {
		signing, err := signingkey.Generate(alg)
		if err != nil {
			return nil, fmt.Errorf("generate %s signing key: %w", alg, err)
		}
		hmac, err := randsecret.New(32)
		return resources.KeysSecret(ts, signing, nil, []byte(hmac), now.UTC().Format(time.RFC3339)), err
	})
	if err != nil {
		return nil, 0, err
	}
	state := resources.SigningKeyState{RotatedAt: resources.SigningKeyRotatedAt(sec.Annotations, sec.CreationTimestamp.Time)}
	if current, err := signingkey.Parse(sec.Data[resources.KeySigningKey]); err == nil {
		state.Algorithm = current.Algorithm
	}
	plan := resources.PlanKeyRotation(ts, state, now)
	if !plan.Rotate {
		return sec, plan.Next, nil
	}
	if hold {
		return sec, time.Minute, nil
	}
	signing, err := signingkey.Generate(alg)
	if err != nil {
		return nil, 0, fmt.Errorf("generate %s signing key: %w", alg, err)
	}
	rotated := resources.KeysSecret(ts, signing, sec.Data[resources.KeySigningKey], sec.Data[resources.KeyHMAC],
		now.UTC().Format(time.RFC3339))
	sec.Data, sec.Annotations = rotated.Data, rotated.Annotations
	// The update carries the resourceVersion read: a stale copy fails instead of
	// rotating twice.
	if err := r.Update(ctx, sec); err != nil {
		return nil, 0, fmt.Errorf("rotate the signing key in Secret %s: %w", sec.Name, err)
	}
	r.Recorder.Eventf(ts, nil, corev1.EventTypeNormal, "SigningKeyRotated", "Rotate",
		"new %s signing key in Secret %s (%s); the previous one stays in the JWKS", alg, sec.Name, plan.Reason)
	return sec, plan.Next, nil
}

// database brings up the bundled PostgreSQL and waits for it; an external database
// needs its DSN Secret to exist.
func (r *TokenServerReconciler) database(ctx context.Context, ts *oauthv1alpha1.TokenServer) error {
	if !resources.ManagedDatabase(ts) {
		name, key := resources.DSNSecretRef(ts)
		var sec corev1.Secret
		err := r.Secrets.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: name}, &sec)
		if apierrors.IsNotFound(err) || (err == nil && len(sec.Data[key]) == 0) {
			return waiting(ReasonSecretMissing, fmt.Sprintf("waiting for Secret %s with key %s (spec.database.external.secretRef)", name, key)).
				waitingOn(secretKey(name, key))
		}
		if err != nil {
			return fmt.Errorf("get Secret %s (spec.database.external.secretRef): %w", name, err)
		}
		return nil
	}
	if _, err := r.ensureSecret(ctx, ts, resources.DatabaseObjectName(ts), func() (*corev1.Secret, error) {
		password, err := randsecret.New(24)
		return resources.DatabaseSecret(ts, password), err
	}); err != nil {
		return fmt.Errorf("database password: %w", err)
	}
	for _, obj := range []client.Object{resources.DatabaseService(ts), resources.DatabaseStatefulSet(ts)} {
		if err := r.apply(ctx, ts, obj); err != nil {
			return err
		}
	}
	var sts appsv1.StatefulSet
	key := types.NamespacedName{Namespace: ts.Namespace, Name: resources.DatabaseObjectName(ts)}
	if err := r.Get(ctx, key, &sts); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("get StatefulSet %s: %w", key.Name, err)
	}
	if sts.Status.ReadyReplicas < 1 {
		w := waiting(ReasonWaitingForDatabase, fmt.Sprintf("waiting for the database StatefulSet %s to be ready", key.Name))
		if sts.UID != "" { // not in the cache yet: nothing to count
			w = w.waitingFor(podWait{owner: &sts, kind: "StatefulSet", created: sts.Status.Replicas, want: 1})
		}
		return w
	}
	return nil
}

// upstreamSecret waits for the upstream provider's client secret and CA Secrets: a
// pod would not start without the keys it mounts, and the condition says which is
// missing.
func (r *TokenServerReconciler) upstreamSecret(ctx context.Context, ts *oauthv1alpha1.TokenServer) error {
	var refs []secretRef
	if name, key := resources.UpstreamSecretRef(ts); name != "" {
		refs = append(refs, secretRef{name, key, "spec.login.upstreamOIDC.clientSecretRef", false})
	}
	if name, key := resources.UpstreamCARef(ts); name != "" {
		refs = append(refs, secretRef{name, key, caSecretField, true})
	}
	return r.requireSecrets(ctx, ts.Namespace, refs)
}

// secretRef is a key of a Secret the user provides, named by the field that names it;
// ca: the key holds PEM certificates.
type secretRef struct {
	name, key, field string
	ca               bool
}

// requireSecrets waits for each of refs in turn: a Secret that does not exist or
// lacks its key is SecretMissing, a CA that holds no certificate InvalidSecret, each
// a wait for that Secret's key (status.waiting.object), so that fixing one starts
// spec.progressDeadline's count again for the next.
func (r *TokenServerReconciler) requireSecrets(ctx context.Context, namespace string, refs []secretRef) error {
	for _, ref := range refs {
		var sec corev1.Secret
		err := r.Secrets.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.name}, &sec)
		if apierrors.IsNotFound(err) || (err == nil && len(sec.Data[ref.key]) == 0) {
			return waiting(ReasonSecretMissing, fmt.Sprintf("waiting for Secret %s with key %s (%s)", ref.name, ref.key, ref.field)).
				waitingOn(secretKey(ref.name, ref.key))
		}
		if err != nil {
			return fmt.Errorf("get Secret %s (%s): %w", ref.name, ref.field, err)
		}
		if ref.ca && !holdsCertificate(sec.Data[ref.key]) {
			return waiting(ReasonInvalidSecret, fmt.Sprintf("Secret %s key %s holds no PEM certificate (%s)", ref.name, ref.key, ref.field)).
				waitingOn(secretKey(ref.name, ref.key))
		}
	}
	return nil
}

// secretKey names a Secret's key as status.waiting.object holds it.
func secretKey(name, key string) string { return "Secret " + name + " key " + key }

const caSecretField = "spec.login.upstreamOIDC.caSecretRef" // #nosec G101 -- a field path, not a credential

// holdsCertificate says whether data has a PEM certificate the token server can
// parse: without one it stops at start, and its pods crash-loop.
func holdsCertificate(data []byte) bool {
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return false
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err == nil {
			return true
		}
	}
}

// migrations runs the image's migrations Job and waits for it to succeed.
func (r *TokenServerReconciler) migrations(ctx context.Context, ts *oauthv1alpha1.TokenServer) error {
	want := resources.MigrationJob(ts, ts.Spec.Image)
	var job batchv1.Job
	err := r.Get(ctx, client.ObjectKeyFromObject(want), &job)
	if apierrors.IsNotFound(err) {
		if err := controllerutil.SetControllerReference(ts, want, r.Scheme()); err != nil {
			return fmt.Errorf("create Job %s: %w", want.Name, err)
		}
		if err := r.Create(ctx, want); err != nil {
			return refusal("create", "Job", want.Name, err)
		}
		r.Recorder.Eventf(ts, nil, corev1.EventTypeNormal, ReasonMigrating, "Migrate", "Job %s migrates the database for %s",
			want.Name, ts.Spec.Image)
		return waiting(ReasonMigrating, fmt.Sprintf("Job %s is migrating the database", want.Name))
	}
	if err != nil {
		return fmt.Errorf("get Job %s: %w", want.Name, err)
	}
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return nil
		case batchv1.JobFailed:
			return needsHuman(ReasonMigrationFailed, fmt.Sprintf("Job %s failed: %s; see kubectl logs job/%s", job.Name, c.Message, job.Name))
		}
	}
	return waiting(ReasonMigrating, fmt.Sprintf("Job %s is migrating the database", job.Name)).waitingFor(
		podWait{owner: &job, kind: "Job", created: job.Status.Active + job.Status.Succeeded + job.Status.Failed,
			ready: ptr.Deref(job.Status.Ready, 0), want: 1})
}

// configHash covers what the pods read only at start: keys, admin token and TLS, scope
// descriptions, and the versions of the DSN and upstream provider's Secrets. A change
// rolls them. The users Secret must exist but is not in it: the token server reads
// its file again when the kubelet updates the volume, keeping the last good reading
// when the new one does not parse, whereas a pod rolled to read a broken file would
// not start (with one replica, an outage for a typo).
func (r *TokenServerReconciler) configHash(ctx context.Context, ts *oauthv1alpha1.TokenServer,
	keys, admin, adminTLS *corev1.Secret) (string, error) {
	h := sha256.New()
	for _, sec := range []*corev1.Secret{keys, admin, adminTLS} {
		names := make([]string, 0, len(sec.Data))
		for k := range sec.Data {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			_, _ = fmt.Fprintf(h, "%s/%s=%x\n", sec.Name, k, sha256.Sum256(sec.Data[k]))
		}
	}
	cm := resources.ConfigMap(ts)
	_, _ = fmt.Fprintf(h, "scopes=%s\n", cm.Data[resources.KeyScopes])
	if u, ok := cm.Data[resources.KeyUpstreamOIDC]; ok {
		_, _ = fmt.Fprintf(h, "upstream=%s\n", u)
	}
	type ref struct {
		name, field string
		rolls       bool // its version is in the hash
	}
	var refs []ref
	// spec.database's Secret, not status.database's: a Copy upgrade's cutover moves
	// the database without rolling the pods that serve on it.
	if name, _ := resources.SpecDSNSecretRef(ts); name != "" {
		refs = append(refs, ref{name, "spec.database", true})
	}
	if l := ts.Spec.Login; l != nil && l.UsersSecretRef != nil {
		refs = append(refs, ref{l.UsersSecretRef.Name, "spec.login.usersSecretRef", false})
	}
	if name, _ := resources.UpstreamSecretRef(ts); name != "" {
		refs = append(refs, ref{name, "spec.login.upstreamOIDC.clientSecretRef", true})
	}
	if name, _ := resources.UpstreamCARef(ts); name != "" {
		refs = append(refs, ref{name, caSecretField, true})
	}
	for _, ref := range refs {
		// The cache's metadata is enough: a new resourceVersion is a new file.
		version, err := r.Secrets.Version(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: ref.name})
		if apierrors.IsNotFound(err) {
			return "", waiting(ReasonSecretMissing, fmt.Sprintf("waiting for Secret %s (%s)", ref.name, ref.field)).
				waitingOn("Secret " + ref.name)
		}
		if err != nil {
			return "", fmt.Errorf("get Secret %s: %w", ref.name, err)
		}
		if ref.rolls {
			_, _ = fmt.Fprintf(h, "%s@%s\n", ref.name, version)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// readyAdminURL is the admin API of one ready pod behind the admin Service, found
// through its EndpointSlices rather than the Service's DNS name: the operator then
// reaches it from outside the cluster (make run) and on clusters without kube-proxy,
// and only ever calls a pod that passes its readiness probe.
//
// A slice counts only if the admin Service, which this TokenServer controls, is its
// controller: anyone who may create EndpointSlices in the namespace can copy the
// service-name label onto one that points elsewhere. (An owner reference can be
// forged too by whoever may write slices; TLS with the operator's CA is what keeps
// the token from such an address, this keeps the operator from even trying.)
func readyAdminURL(ctx context.Context, c client.Reader, ts *oauthv1alpha1.TokenServer) (string, error) {
	var svc corev1.Service
	if err := c.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: resources.AdminObjectName(ts)}, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("%w: no Service %s yet", errServerNotReady, resources.AdminObjectName(ts))
		}
		return "", fmt.Errorf("get Service %s: %w", resources.AdminObjectName(ts), err)
	}
	if !metav1.IsControlledBy(&svc, ts) {
		return "", fmt.Errorf("the Service %s is not controlled by TokenServer %s", svc.Name, ts.Name)
	}
	var slices discoveryv1.EndpointSliceList
	if err := c.List(ctx, &slices, client.InNamespace(ts.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: resources.AdminObjectName(ts)}); err != nil {
		return "", fmt.Errorf("list the EndpointSlices of Service %s: %w", resources.AdminObjectName(ts), err)
	}
	for _, s := range slices.Items {
		if !metav1.IsControlledBy(&s, &svc) {
			continue
		}
		port := int32(resources.AdminPort)
		for _, p := range s.Ports {
			if p.Port != nil && ptr.Deref(p.Name, "") == "admin" {
				port = *p.Port
			}
		}
		for _, e := range s.Endpoints {
			if ptr.Deref(e.Conditions.Ready, false) && len(e.Addresses) > 0 {
				return "https://" + net.JoinHostPort(e.Addresses[0], strconv.Itoa(int(port))), nil
			}
		}
	}
	return "", fmt.Errorf("%w: no ready endpoint behind Service %s", errServerNotReady, resources.AdminObjectName(ts))
}
