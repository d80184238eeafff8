package controllers

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// A Copy upgrade runs its replay as Deployments (one replica each), which the
// operator creates and deletes as the phases ask.
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;delete
// A copy Job still running once its upgrade ended is deleted before the cleanup.
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=delete

// specDatabase is spec.database's DSN reference.
func specDatabase(ts *oauthv1alpha1.TokenServer) oauthv1alpha1.DatabaseRef {
	name, key := resources.SpecDSNSecretRef(ts)
	return oauthv1alpha1.DatabaseRef{SecretName: name, Key: key}
}

// copyDatabases are the old version's database and the copy of the Copy upgrade u.
func copyDatabases(ts *oauthv1alpha1.TokenServer, u *oauthv1alpha1.UpgradeStatus) (source, target oauthv1alpha1.DatabaseRef) {
	source = specDatabase(ts)
	if u.Copy.Source != nil {
		source = *u.Copy.Source
	}
	return source, u.Copy.Database
}

// copyJob builds the Copy upgrade's Job j asks for; nil for another kind.
func copyJob(ts *oauthv1alpha1.TokenServer, u *oauthv1alpha1.UpgradeStatus, j upgrade.JobIntent) *batchv1.Job {
	if u.Copy == nil {
		return nil
	}
	source, target := copyDatabases(ts, u)
	switch j.Kind {
	case upgrade.JobCopy:
		return resources.CopyJob(ts, j.Name, j.Image, u.ID, resources.ColorURL(ts, u.FromColor), source, target)
	case upgrade.JobCutover:
		return resources.CutoverJob(ts, j.Name, j.Image, u.ID, upgrade.Forward, resources.ColorURL(ts, u.ToColor), source, target)
	case upgrade.JobCutback:
		return resources.CutoverJob(ts, j.Name, j.Image, u.ID, upgrade.Backward, resources.ColorURL(ts, u.FromColor), target, source)
	case upgrade.JobCleanup:
		if j.Database == nil {
			return nil
		}
		drop := ""
		if j.DropCopy {
			drop = resources.CopyDatabaseName(u.ID)
		}
		return resources.CleanupJob(ts, j.Name, j.Image, *j.Database, drop)
	}
	return nil
}

// deleteJobs deletes the named Jobs of ts (a copy Job that outlived its upgrade);
// their pods go with them.
func (r *TokenServerReconciler) deleteJobs(ctx context.Context, ts *oauthv1alpha1.TokenServer, names []string) error {
	for _, name := range names {
		var job batchv1.Job
		err := r.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: name}, &job)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get Job %s: %w", name, err)
		}
		if !metav1.IsControlledBy(&job, ts) || job.DeletionTimestamp != nil {
			continue
		}
		if err := r.Delete(ctx, &job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete Job %s: %w", name, err)
		}
	}
	return nil
}

// lostPodAfter: a pod still there this long after its deletion timestamp (its
// grace period already included) is on a lost node and runs nothing any more.
const lostPodAfter = time.Minute

// replayPods counts the pods of ts's replay Deployments, terminating ones too
// (one may still finish a pass), but not those on a lost node, which stay for
// good: the cleanup that waits for them would wait forever.
func (r *TokenServerReconciler) replayPods(ctx context.Context, ts *oauthv1alpha1.TokenServer, now time.Time) (int, error) {
	return r.livePods(ctx, ts, resources.ReplaySelector(ts), "", now)
}

// jobPods counts, as replayPods does, the pods of ts's Job name that may still run:
// those of its Jobs' pods (one label for all) whose controller is that Job, and
// that have not ended (a finished Job keeps its pods).
func (r *TokenServerReconciler) jobPods(ctx context.Context, ts *oauthv1alpha1.TokenServer, name string, now time.Time) (int, error) {
	return r.livePods(ctx, ts, resources.JobPodSelector(ts), name, now)
}

// livePods counts the pods of ts matching sel (and, if job is set, whose controller
// is that Job and that have not ended) that are not on a lost node.
func (r *TokenServerReconciler) livePods(ctx context.Context, ts *oauthv1alpha1.TokenServer, sel map[string]string, job string,
	now time.Time) (int, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(ts.Namespace), client.MatchingLabels(sel)); err != nil {
		return 0, fmt.Errorf("list pods: %w", err)
	}
	n := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if job != "" {
			if c := metav1.GetControllerOf(p); c == nil || c.Kind != "Job" || c.Name != job ||
				p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
		}
		if d := p.DeletionTimestamp; d == nil || now.Before(d.Add(lostPodAfter)) {
			n++
		}
	}
	return n, nil
}

// ensureCopySecret creates the bundled copy's DSN Secret, derived from the bundled
// database's DSN; an existing one is kept (a rerun of the same upgrade copies into
// the same database).
func (r *TokenServerReconciler) ensureCopySecret(ctx context.Context, ts *oauthv1alpha1.TokenServer, name string) error {
	if name == "" || ts.Status.Upgrade == nil {
		return nil
	}
	id := ts.Status.Upgrade.ID
	sec, err := r.ensureSecret(ctx, ts, name, func() (*corev1.Secret, error) {
		var bundled corev1.Secret
		key := types.NamespacedName{Namespace: ts.Namespace, Name: resources.DatabaseObjectName(ts)}
		if err := r.Secrets.Get(ctx, key, &bundled); err != nil {
			return nil, fmt.Errorf("read the bundled database's DSN: %w", err)
		}
		return resources.CopyTargetSecret(ts, name, string(bundled.Data[resources.KeyDSN]), id)
	})
	if err != nil {
		return err
	}
	// A Secret of that name someone else made (another TokenServer's own database
	// Secret: a server named auth-<id> keeps its DSN in auth-<id>-db) must never be
	// copied into: the copy waits, and the error says why.
	if !metav1.IsControlledBy(sec, ts) {
		return fmt.Errorf("the copy's DSN Secret %s exists and is not this TokenServer's: delete it, or roll the upgrade back", name)
	}
	return nil
}

// applyReplays makes the replay Deployments exist that want lists, and deletes the
// TokenServer's others (a direction that ended, an earlier upgrade's).
func (r *TokenServerReconciler) applyReplays(ctx context.Context, ts *oauthv1alpha1.TokenServer, want []upgrade.ReplayIntent) error {
	var list appsv1.DeploymentList
	if err := r.List(ctx, &list, client.InNamespace(ts.Namespace), client.MatchingLabels(resources.ReplaySelector(ts))); err != nil {
		return fmt.Errorf("list the replay Deployments: %w", err)
	}
	wanted := map[string]bool{}
	for _, w := range want {
		wanted[w.Name] = true
	}
	have := map[string]bool{}
	for i := range list.Items {
		d := &list.Items[i]
		if !metav1.IsControlledBy(d, ts) {
			continue
		}
		have[d.Name] = true
		if wanted[d.Name] || d.DeletionTimestamp != nil {
			continue
		}
		if err := r.Delete(ctx, d, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete the replay Deployment %s: %w", d.Name, err)
		}
	}
	u := ts.Status.Upgrade
	for _, w := range want {
		if have[w.Name] || u == nil || u.Copy == nil {
			continue
		}
		source, target := copyDatabases(ts, u)
		if w.Direction == upgrade.Backward {
			source, target = target, source
		}
		d := resources.ReplayDeployment(ts, w.Name, u.ToImage, u.ID, w.Direction, source, target)
		if err := controllerutil.SetControllerReference(ts, d, r.Scheme()); err != nil {
			return fmt.Errorf("create Deployment %s: %w", d.Name, err)
		}
		if err := r.Create(ctx, d); client.IgnoreAlreadyExists(err) != nil {
			return refusal("create", "Deployment", d.Name, err)
		}
	}
	return nil
}

// scrapeReplay reads the figures of the replay in direction from its ready pod's
// metrics; nil when there is none or they cannot be read (Replaying then waits).
func (r *TokenServerReconciler) scrapeReplay(ctx context.Context, ts *oauthv1alpha1.TokenServer,
	u *oauthv1alpha1.UpgradeStatus, direction string) *upgrade.ReplayFigures {
	sel := resources.ReplaySelector(ts)
	sel[resources.LabelReplay] = upgrade.ReplayName(ts.Name, u.ID, direction)
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(ts.Namespace), client.MatchingLabels(sel)); err != nil {
		log.FromContext(ctx).Info("the replay's pods could not be listed", "error", err.Error())
		return nil
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" || !podReady(p) || len(p.Spec.Containers) == 0 {
			continue
		}
		port := int32(resources.MetricsPort)
		for _, cp := range p.Spec.Containers[0].Ports {
			if cp.Name == "metrics" {
				port = cp.ContainerPort
			}
		}
		f, err := scrapeReplayFigures(ctx, "http://"+net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port)))+"/metrics")
		if err != nil {
			log.FromContext(ctx).Info("the replay's metrics could not be read", "pod", p.Name, "error", err.Error())
			return nil
		}
		return f
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// scrapeReplayFigures reads kubeoauth_replay_pending_changes and
// kubeoauth_replay_lag_seconds, the gauges `tokenserver db replay` serves.
func scrapeReplayFigures(ctx context.Context, url string) (*upgrade.ReplayFigures, error) {
	families, err := scrapeFamilies(ctx, url)
	if err != nil {
		return nil, err
	}
	gauge := func(name string) (float64, error) {
		f, ok := families[name]
		if !ok || len(f.GetMetric()) == 0 {
			return 0, fmt.Errorf("%s has no %s", url, name)
		}
		return f.GetMetric()[0].GetGauge().GetValue(), nil
	}
	pending, err := gauge("kubeoauth_replay_pending_changes")
	if err != nil {
		return nil, err
	}
	lag, err := gauge("kubeoauth_replay_lag_seconds")
	if err != nil {
		return nil, err
	}
	return &upgrade.ReplayFigures{Pending: int64(pending), Lag: time.Duration(lag * float64(time.Second))}, nil
}
