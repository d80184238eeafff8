package controllers

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// defaultJobTTL is spec.jobs.ttlSecondsAfterFinished's default, in seconds, for a
// TokenServer made before the field had one.
const defaultJobTTL = 3600

// deleteExpiredJobs deletes, with their pods, the Jobs of ended upgrades that
// upgrade.ExpiredJobs says are due under u (the status this pass wrote), and says
// when the next one is (0: none waits). The Kubernetes TTL controller cannot do it:
// a Job's TTL counts from the Job's end, while these stay as long as their upgrade
// needs them or a person may need their logs.
func (r *TokenServerReconciler) deleteExpiredJobs(ctx context.Context, ts *oauthv1alpha1.TokenServer,
	u *oauthv1alpha1.UpgradeStatus, now time.Time) (time.Duration, error) {
	if u == nil {
		return 0, nil
	}
	var list batchv1.JobList
	if err := r.List(ctx, &list, client.InNamespace(ts.Namespace), client.MatchingLabels{resources.LabelInstance: ts.Name}); err != nil {
		return 0, fmt.Errorf("list the Jobs of the upgrades: %w", err)
	}
	jobs := make([]upgrade.FinishedJob, 0, len(list.Items))
	for i := range list.Items {
		j := &list.Items[i]
		if !metav1.IsControlledBy(j, ts) || j.DeletionTimestamp != nil {
			continue
		}
		jobs = append(jobs, upgrade.FinishedJob{Name: j.Name, Finished: jobFinished(j)})
	}
	keep := time.Duration(ptr.Deref(ts.Spec.Jobs.TTLSecondsAfterFinished, defaultJobTTL)) * time.Second
	expired, next := upgrade.ExpiredJobs(&oauthv1alpha1.TokenServerStatus{Upgrade: u}, jobs, keep, now)
	return next, r.deleteJobs(ctx, ts, expired)
}

// jobFinished is when job completed or failed, as its conditions say; zero while it
// runs.
func jobFinished(job *batchv1.Job) time.Time {
	for _, c := range job.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			if job.Status.CompletionTime != nil && c.Type == batchv1.JobComplete {
				return job.Status.CompletionTime.Time
			}
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}
