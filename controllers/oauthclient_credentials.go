package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
	"github.com/kubeoauth/kubeoauth/internal/randsecret"
)

// secretWrite writes the credentials Secret once the token server has the secrets in
// it (nil: nothing to write).
type secretWrite func(context.Context) error

// credentials returns the client's secrets: from the Secret the operator generated
// (creating it the first time, rotating it on schedule with the previous secret kept
// for the overlap), or from the user's Secret with create: false, which it waits for
// without inventing one. A new or rotated secret is only returned with the write that
// puts it in the Secret, which the caller runs after the token server took it. It
// returns when rotation needs the next look.
func (r *OAuthClientReconciler) credentials(ctx context.Context, oc *oauthv1alpha1.OAuthClient, clientID, issuer string) (
	clientspec.Credentials, secretWrite, time.Duration, error) {
	var none clientspec.Credentials
	if !clientspec.NeedsSecret(oc) {
		return none, nil, 0, nil
	}
	key := types.NamespacedName{Namespace: oc.Namespace, Name: clientspec.SecretName(oc)}
	var sec corev1.Secret
	err := r.Secrets.Get(ctx, key, &sec)
	if apierrors.IsNotFound(err) && clientspec.CreatesSecret(oc) {
		// The cache may not show a Secret created a moment ago: pushing a fresh secret
		// for it would lock out the apps that read the one in it.
		err = r.Secrets.api.Get(ctx, key, &sec)
	}
	switch {
	case apierrors.IsNotFound(err) && !clientspec.CreatesSecret(oc):
		return none, nil, 0, waiting(ReasonSecretNotFound,
			fmt.Sprintf("waiting for Secret %s with key %s (spec.secret.create is false)", key.Name, clientspec.KeyClientSecret))
	case apierrors.IsNotFound(err):
		return r.newCredentials(oc, key, clientID, issuer)
	case err != nil:
		return none, nil, 0, fmt.Errorf("get Secret %s: %w", key.Name, err)
	}
	secret := string(sec.Data[clientspec.KeyClientSecret])
	if len(secret) < 32 {
		return none, nil, 0, needsHuman(ReasonSecretInvalid,
			fmt.Sprintf("Secret %s: key %s must hold at least 32 characters", key.Name, clientspec.KeyClientSecret))
	}
	if !clientspec.CreatesSecret(oc) || !metav1.IsControlledBy(&sec, oc) {
		return clientspec.Credentials{Secret: secret}, nil, 0, nil
	}
	return r.rotate(ctx, oc, &sec, clientID, issuer)
}

// newCredentials makes the first secret and the Secret that will hold it.
func (r *OAuthClientReconciler) newCredentials(oc *oauthv1alpha1.OAuthClient, key types.NamespacedName, clientID, issuer string) (
	clientspec.Credentials, secretWrite, time.Duration, error) {
	var none clientspec.Credentials
	secret, err := randsecret.New(32)
	if err != nil {
		return none, nil, 0, fmt.Errorf("generate a client secret: %w", err)
	}
	now := r.Clock.Now().Truncate(time.Second)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
		Labels:      map[string]string{LabelManagedBy: ManagedBy},
		Annotations: map[string]string{clientspec.AnnotationRotatedAt: now.UTC().Format(time.RFC3339)}},
		Type: corev1.SecretTypeOpaque, Data: clientspec.SecretData(clientID, secret, issuer)}
	if err := controllerutil.SetControllerReference(oc, sec, r.Scheme()); err != nil {
		return none, nil, 0, fmt.Errorf("own Secret %s: %w", key.Name, err)
	}
	plan, err := clientspec.PlanRotation(oc.Spec.Secret.Rotation, now, time.Time{}, now)
	if err != nil {
		return none, nil, 0, fmt.Errorf("plan the rotation of Secret %s: %w", key.Name, err)
	}
	write := func(ctx context.Context) error {
		if err := r.Create(ctx, sec); err != nil {
			return fmt.Errorf("create Secret %s: %w", sec.Name, err)
		}
		r.Secrets.remember(sec)
		t := metav1.NewTime(now)
		oc.Status.SecretRotatedAt = &t
		return nil
	}
	return clientspec.Credentials{Secret: secret}, write, plan.Next, nil
}

// rotationState is what a generated Secret says about its rotation: when it was last
// rotated (or created) and until when its previous secret works (zero: none).
func rotationState(sec *corev1.Secret) (rotatedAt, previousUntil time.Time) {
	rotatedAt = sec.CreationTimestamp.Time
	if v, err := time.Parse(time.RFC3339, sec.Annotations[clientspec.AnnotationRotatedAt]); err == nil {
		rotatedAt = v
	}
	if v := sec.Annotations[clientspec.AnnotationPreviousUntil]; v != "" {
		previousUntil, _ = time.Parse(time.RFC3339, v)
	}
	return rotatedAt, previousUntil
}

// rotate brings a generated Secret in line: a new secret when rotation is due (the
// old one kept as previous_client_secret until the overlap ends), the previous one
// dropped after, and the other keys as they should be. It returns the secrets to push
// and the write that follows (nil when the Secret is as it should be). Crash-safe in
// either order of failure: the token server first learns the new secret with the
// current one as previous, so apps holding the current one keep working whether or
// not the Secret write that follows happens; if it does not, the next pass rotates
// afresh from the Secret as it stands.
func (r *OAuthClientReconciler) rotate(ctx context.Context, oc *oauthv1alpha1.OAuthClient, sec *corev1.Secret, clientID, issuer string) (
	clientspec.Credentials, secretWrite, time.Duration, error) {
	var none clientspec.Credentials
	rot := oc.Spec.Secret.Rotation
	now := r.Clock.Now()
	rotatedAt, previousUntil := rotationState(sec)
	plan, err := clientspec.PlanRotation(rot, rotatedAt, previousUntil, now)
	if err != nil {
		return none, nil, 0, fmt.Errorf("plan the rotation of Secret %s: %w", sec.Name, err)
	}
	if plan.Rotate {
		// Rotating from a stale cached copy would push a secret that makes the one
		// already in the Secret (and in the apps) unknown to the server: read it fresh.
		var fresh corev1.Secret
		if err := r.Secrets.api.Get(ctx, client.ObjectKeyFromObject(sec), &fresh); err != nil {
			return none, nil, 0, fmt.Errorf("read Secret %s before rotating it: %w", sec.Name, err)
		}
		if fresh.ResourceVersion != sec.ResourceVersion {
			sec = &fresh
			rotatedAt, previousUntil = rotationState(sec)
			if plan, err = clientspec.PlanRotation(rot, rotatedAt, previousUntil, now); err != nil {
				return none, nil, 0, fmt.Errorf("plan the rotation of Secret %s: %w", sec.Name, err)
			}
		}
	}
	creds := clientspec.Credentials{Secret: string(sec.Data[clientspec.KeyClientSecret]),
		PreviousSecret: string(sec.Data[clientspec.KeyPreviousClientSecret])}
	if plan.Rotate {
		overlap, err := clientspec.Overlap(rot)
		if err != nil {
			return none, nil, 0, fmt.Errorf("spec.secret.rotation.overlap: %w", err)
		}
		fresh, err := randsecret.New(32)
		if err != nil {
			return none, nil, 0, fmt.Errorf("generate a client secret: %w", err)
		}
		creds.PreviousSecret, creds.Secret = creds.Secret, fresh
		previousUntil = now.Add(overlap).Truncate(time.Second)
	}
	if plan.DropPrevious {
		creds.PreviousSecret, previousUntil = "", time.Time{}
	}
	want := clientspec.SecretData(clientID, creds.Secret, issuer)
	annotations := map[string]string{}
	for k, v := range sec.Annotations {
		annotations[k] = v
	}
	delete(annotations, clientspec.AnnotationPreviousUntil)
	if plan.Rotate {
		rotatedAt = now.Truncate(time.Second)
		annotations[clientspec.AnnotationRotatedAt] = rotatedAt.UTC().Format(time.RFC3339)
	}
	if creds.PreviousSecret != "" && !previousUntil.IsZero() {
		want[clientspec.KeyPreviousClientSecret] = []byte(creds.PreviousSecret)
		annotations[clientspec.AnnotationPreviousUntil] = previousUntil.UTC().Format(time.RFC3339)
		until := metav1.NewTime(previousUntil)
		creds.PreviousUntil = &until
	} else {
		creds.PreviousSecret = ""
	}
	next := plan.Next
	if plan.Rotate {
		if overlap := previousUntil.Sub(now); overlap > 0 && overlap < next {
			next = overlap
		}
	}
	t := metav1.NewTime(rotatedAt)
	if equality.Semantic.DeepEqual(sec.Data, want) && equality.Semantic.DeepEqual(nilIfEmpty(sec.Annotations), nilIfEmpty(annotations)) {
		oc.Status.SecretRotatedAt = &t
		return creds, nil, next, nil
	}
	write := func(ctx context.Context) error {
		sec.Data, sec.Annotations = want, annotations
		if err := r.Update(ctx, sec); err != nil {
			return fmt.Errorf("update Secret %s: %w", sec.Name, err)
		}
		r.Secrets.remember(sec)
		oc.Status.SecretRotatedAt = &t
		if plan.Rotate {
			r.Recorder.Eventf(oc, nil, corev1.EventTypeNormal, "SecretRotated", "Rotate",
				"new secret in %s; the previous one works until %s", sec.Name, previousUntil.UTC().Format(time.RFC3339))
		}
		return nil
	}
	return creds, write, next, nil
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}
