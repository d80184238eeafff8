package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/pages"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// Reasons of Degraded for spec.branding.templatesConfigMapRef.
const (
	ReasonPageTemplatesMissing = "PageTemplatesMissing"
	ReasonPageTemplatesInvalid = "PageTemplatesInvalid"
)

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch

// pages copies the templates of spec.branding.templatesConfigMapRef into the
// ConfigMap the pods mount (resources.PagesConfigMap) once pages.Parse accepts them,
// as the token server will parse them at start. A ConfigMap that is missing, or
// refused, is problem: reported in Degraded while the pods keep the last templates
// that passed (the built-in ones if none ever did), so that a bad edit never reaches
// a pod, not even one that restarts, and never takes a login page down. It returns
// the digest of what the pods mount: a change rolls them, since they read templates
// at start only (one parsed set per pod, never a page of the old layout and one of
// the new, and readiness gating the rollout).
func (r *TokenServerReconciler) pages(ctx context.Context, ts *oauthv1alpha1.TokenServer) (
	hash string, problem *conditionError, err error) {
	b := ts.Spec.Branding
	if b == nil || b.TemplatesConfigMapRef == nil {
		return "", nil, nil
	}
	name := b.TemplatesConfigMapRef.Name
	var src corev1.ConfigMap
	// Read from the API server, not a cache: ConfigMaps are watched as metadata only
	// (ClientOptions), as Secrets are.
	err = r.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: name}, &src)
	switch {
	case apierrors.IsNotFound(err):
		problem = needsHuman(ReasonPageTemplatesMissing, fmt.Sprintf("waiting for ConfigMap %s (spec.branding.templatesConfigMapRef); "+
			"the pages keep their last good templates", name))
	case err != nil:
		return "", nil, fmt.Errorf("get ConfigMap %s: %w", name, err)
	default:
		if problem, err = checkTemplates(ctx, &src); err != nil {
			return "", nil, err
		}
	}
	if problem == nil {
		if err := r.writePages(ctx, ts, src.Data); err != nil {
			return "", nil, err
		}
		return templatesDigest(src.Data), nil, nil
	}
	var mounted corev1.ConfigMap
	err = r.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: resources.PagesConfigMapName(ts)}, &mounted)
	if err != nil && !apierrors.IsNotFound(err) {
		return "", nil, fmt.Errorf("get ConfigMap %s: %w", resources.PagesConfigMapName(ts), err)
	}
	if err == nil && len(mounted.BinaryData) == 0 {
		// The copy holds what passed, unless someone edited it since: what it holds
		// now must pass too (a verdict kept from when the operator wrote it).
		err := templateChecks.check(ctx, mounted.Data)
		var fe *pages.FileError
		if err == nil {
			return templatesDigest(mounted.Data), problem, nil
		}
		if !errors.As(err, &fe) {
			return "", nil, err
		}
	}
	// No copy (the pods need the volume to start), or one edited into something that
	// does not pass: the built-in pages until a source passes.
	if err := r.writePages(ctx, ts, nil); err != nil {
		return "", nil, err
	}
	return templatesDigest(nil), problem, nil
}

// writePages makes the pods' ConfigMap hold exactly files. Apply sets the
// operator's keys but leaves those another field manager added (kubectl edit):
// such a key would reach the next pod that starts unchecked, so the whole data is
// replaced when the live copy holds anything else.
func (r *TokenServerReconciler) writePages(ctx context.Context, ts *oauthv1alpha1.TokenServer, files map[string]string) error {
	if err := r.apply(ctx, ts, resources.PagesConfigMap(ts, files)); err != nil {
		return err
	}
	var live corev1.ConfigMap
	if err := r.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: resources.PagesConfigMapName(ts)}, &live); err != nil {
		return fmt.Errorf("get ConfigMap %s: %w", live.Name, err)
	}
	if maps.Equal(live.Data, files) && len(live.BinaryData) == 0 {
		return nil
	}
	orig := live.DeepCopy()
	live.Data, live.BinaryData = files, nil
	// A merge patch (the operator may patch, not update, ConfigMaps) that sets the
	// other keys to null, conditional on the resourceVersion read: a conflict is
	// retried.
	if err := r.Patch(ctx, &live, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), fieldOwner); err != nil {
		return fmt.Errorf("patch ConfigMap %s: %w", live.Name, err)
	}
	return nil
}

// checkTemplates is the problem with a templates ConfigMap, naming the key; nil if
// the token server would accept it. The check runs in a child process with a
// deadline and a memory cap (pages.Check): the templates are anyone's who may
// write ConfigMaps in the namespace, and one that loops or grows without bound
// must not take down the operator, which serves every namespace. An error is the
// check's own failure, retried.
func checkTemplates(ctx context.Context, cm *corev1.ConfigMap) (*conditionError, error) {
	refuse := func(key string, why error) *conditionError {
		msg := quote(why.Error(), 1024)
		return needsHuman(ReasonPageTemplatesInvalid, fmt.Sprintf("ConfigMap %s key %s: %s; the pages keep their last good templates",
			cm.Name, key, msg))
	}
	if owner := metav1.GetControllerOf(cm); owner != nil {
		// Such as another TokenServer's <name>-pages (this one's own is refused by
		// the API server): its edits are not the user's, and are not watched.
		return needsHuman(ReasonPageTemplatesInvalid, fmt.Sprintf("ConfigMap %s is controlled by %s %s: name a ConfigMap of "+
			"your own in spec.branding.templatesConfigMapRef; the pages keep their last good templates", cm.Name, owner.Kind, owner.Name)), nil
	}
	for _, k := range slices.Sorted(maps.Keys(cm.BinaryData)) {
		return refuse(k, errors.New("is binaryData: templates are text, under data")), nil
	}
	err := templateChecks.check(ctx, cm.Data)
	var fe *pages.FileError
	switch {
	case err == nil:
		return nil, nil
	case errors.As(err, &fe):
		return refuse(fe.Name, fe.Err), nil
	default:
		return nil, err
	}
}

// templateChecks remembers the verdicts of pages.Check by digest: a check costs a
// process, and a TokenServer is reconciled far more often than its templates change.
var templateChecks = &checkCache{verdicts: map[string]error{}}

type checkCache struct {
	mu       sync.Mutex
	verdicts map[string]error // nil or a *pages.FileError
}

func (c *checkCache) check(ctx context.Context, files map[string]string) error {
	key := fullDigest(files)
	c.mu.Lock()
	verdict, ok := c.verdicts[key]
	c.mu.Unlock()
	if ok {
		return verdict
	}
	err := pages.Check(ctx, files)
	var fe *pages.FileError
	if err != nil && !errors.As(err, &fe) {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.verdicts) >= 256 {
		clear(c.verdicts)
	}
	c.verdicts[key] = err
	return err
}

// templatesDigest identifies a set of templates.
func templatesDigest(files map[string]string) string { return fullDigest(files)[:16] }

// fullDigest is templatesDigest untruncated: the key of a verdict, which must not
// be found for other templates by a search of 2^32 steps.
func fullDigest(files map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(files)) {
		_, _ = fmt.Fprintf(h, "%s=%x\n", k, sha256.Sum256([]byte(files[k])))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// withPages reports a templates ConfigMap that is missing or refused in Degraded,
// unless Degraded says something else already. Ready stays the pass's: the pods
// serve, with the last good templates. Pure: table-tested.
func withPages(conds []metav1.Condition, problem *conditionError) []metav1.Condition {
	if problem == nil {
		return conds
	}
	for i, c := range conds {
		if c.Type == oauthv1alpha1.ConditionDegraded && c.Status == metav1.ConditionFalse {
			conds[i] = condition(oauthv1alpha1.ConditionDegraded, true, problem.reason, problem.message)
		}
	}
	return conds
}

// userConfigMaps names the ConfigMaps a TokenServer reads that the user provides.
func userConfigMaps(ts *oauthv1alpha1.TokenServer) []string {
	if b := ts.Spec.Branding; b != nil && b.TemplatesConfigMapRef != nil {
		return []string{b.TemplatesConfigMapRef.Name}
	}
	return nil
}
