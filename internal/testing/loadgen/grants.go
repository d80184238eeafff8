package loadgen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// AdminGrants makes grants through the token server's admin API, as the operator
// does for a ConsentGrant; for tests without an operator.
type AdminGrants struct{ Admin *adminapi.HTTPClient }

// Grant puts a declared grant.
func (a AdminGrants) Grant(ctx context.Context, clientID, subject string, scopes []string) error {
	_, err := a.Admin.PutGrant(ctx, &adminapi.Grant{ClientID: clientID, Subject: subject, Scopes: scopes})
	return err
}

// Revoke deletes the grant, which revokes its tokens in the same transaction.
func (a AdminGrants) Revoke(ctx context.Context, clientID, subject string) error {
	return a.Admin.DeleteGrant(ctx, clientID, subject)
}

// ConsentGrants makes declared ConsentGrants through the Kubernetes API for one
// OAuthClient, and waits for the operator to act on them. The OAuthClient's
// namespace must be one of its TokenServer's firstPartyNamespaces.
type ConsentGrants struct {
	Client client.Client
	// Namespace and OAuthClient name the OAuthClient whose client ID the generator's
	// GrantClient is.
	Namespace, OAuthClient string
	// Poll is how often the wait for Ready or for the deletion looks; default 100ms.
	Poll time.Duration
}

func (c ConsentGrants) name(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return "loadgen-" + c.OAuthClient + "-" + hex.EncodeToString(sum[:6])
}

func (c ConsentGrants) poll() time.Duration {
	if c.Poll == 0 {
		return 100 * time.Millisecond
	}
	return c.Poll
}

// Grant creates the ConsentGrant and returns once it is Ready for its current
// generation: the operator has put it on the token server.
func (c ConsentGrants) Grant(ctx context.Context, _, subject string, scopes []string) error {
	cg := &oauthv1alpha1.ConsentGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.name(subject)},
		Spec:       oauthv1alpha1.ConsentGrantSpec{ClientRef: oauthv1alpha1.LocalObjectReference{Name: c.OAuthClient}, Subject: subject},
	}
	for _, s := range scopes {
		cg.Spec.Scopes = append(cg.Spec.Scopes, oauthv1alpha1.Scope(s))
	}
	key := client.ObjectKeyFromObject(cg)
	err := c.Client.Create(ctx, cg)
	if apierrors.IsAlreadyExists(err) {
		// An earlier cycle's delete that timed out: let it finish, then grant anew,
		// so that the tokens of this cycle are under a grant of its own.
		if err := c.waitGone(ctx, key); err != nil {
			return err
		}
		cg.ResourceVersion = ""
		err = c.Client.Create(ctx, cg)
	}
	if err != nil {
		return err
	}
	var last *metav1.Condition
	err = wait.PollUntilContextCancel(ctx, c.poll(), true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, key, cg); err != nil {
			return false, err
		}
		last = meta.FindStatusCondition(cg.Status.Conditions, oauthv1alpha1.ConditionReady)
		return last != nil && last.Status == metav1.ConditionTrue && last.ObservedGeneration == cg.Generation, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("ConsentGrant %s not Ready (%s: %s): %w", key, last.Reason, last.Message, err)
	}
	return err
}

// Revoke deletes the ConsentGrant and returns once it is gone: its finalizer
// revoked the grant and its tokens on the token server first.
func (c ConsentGrants) Revoke(ctx context.Context, _, subject string) error {
	cg := &oauthv1alpha1.ConsentGrant{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.name(subject)}}
	// Gone already: its finalizer revoked the grant all the same.
	if err := c.Client.Delete(ctx, cg); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return c.waitGone(ctx, client.ObjectKeyFromObject(cg))
}

func (c ConsentGrants) waitGone(ctx context.Context, key client.ObjectKey) error {
	return wait.PollUntilContextCancel(ctx, c.poll(), true, func(ctx context.Context) (bool, error) {
		err := c.Client.Get(ctx, key, &oauthv1alpha1.ConsentGrant{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}
