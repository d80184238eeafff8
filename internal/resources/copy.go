package resources

import (
	"fmt"
	"net/url"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// The objects of an upgrade with a copied database (docs/upgrades.md, "Copy mode:
// what the operator does"). Every one runs the new image's `tokenserver db ...`
// commands: the new image knows the breaking migrations and their transforms, in
// both directions.

const (
	// componentReplay is the replay Deployments' pods, which the database's
	// NetworkPolicy admits beside the token server and migrations pods.
	componentReplay = "upgrade-replay"
	// LabelReplay on a replay pod names its Deployment: the Deployment's selector.
	LabelReplay = "oauth.kubeoauth.io/replay"
	mountSource = "/etc/kubeoauth/source"
	mountTarget = "/etc/kubeoauth/target"
	// CutoverLeaseExpiredExitCode is `tokenserver db cutover`'s exit code when its
	// fence's lease ran out (the old version resumed): the Job fails at once and the
	// operator starts another.
	CutoverLeaseExpiredExitCode = 4
	// defaultFenceLease is spec.upgrade.copy.fenceLease's default.
	defaultFenceLease = "5s"
)

// CopyDatabaseName is the bundled copy's database in the same PostgreSQL:
// kubeoauth_<upgrade id> (the id is hex: a valid identifier as it is).
func CopyDatabaseName(id string) string { return DatabaseName + "_" + id }

// CopyDSN derives the bundled copy's DSN from the bundled database's: the same
// server, role and options, the database CopyDatabaseName(id).
func CopyDSN(bundled, id string) (string, error) {
	u, err := url.Parse(bundled)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("the bundled database's DSN is not a postgres:// URL")
	}
	u.Path, u.RawPath = "/"+CopyDatabaseName(id), ""
	return u.String(), nil
}

// CopyTargetSecret holds the bundled copy's DSN, derived from the bundled DSN
// (CopyDSN), in the Secret name (upgrade.CopySecretName).
func CopyTargetSecret(ts *oauthv1alpha1.TokenServer, name, bundledDSN, id string) (*corev1.Secret, error) {
	dsn, err := CopyDSN(bundledDSN, id)
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{ObjectMeta: meta(ts, name, componentDatabase), Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{KeyDSN: []byte(dsn)}}, nil
}

// FenceLease is spec.upgrade.copy.fenceLease, or its default.
func FenceLease(ts *oauthv1alpha1.TokenServer) string {
	if l := ts.Spec.Upgrade.Copy.FenceLease; l != "" {
		return string(l)
	}
	return defaultFenceLease
}

// twoDatabases are the source and target DSN files of a `db` command, each from
// its own Secret.
func twoDatabases(source, target oauthv1alpha1.DatabaseRef) ([]corev1.VolumeMount, []corev1.Volume) {
	vol := func(name string, r oauthv1alpha1.DatabaseRef) corev1.Volume {
		key := r.Key
		if key == "" {
			key = KeyDSN
		}
		return secretVolume(name, r.SecretName, corev1.KeyToPath{Key: key, Path: KeyDSN})
	}
	mounts := []corev1.VolumeMount{{Name: "source", MountPath: mountSource, ReadOnly: true},
		{Name: "target", MountPath: mountTarget, ReadOnly: true}}
	return mounts, []corev1.Volume{vol("source", source), vol("target", target)}
}

// copyJobPod is a migrations pod (admitted by the database's NetworkPolicy) that
// runs args with both DSNs, its termination message the command's JSON line, or
// the end of its log should it fail before writing one.
func copyJobPod(ts *oauthv1alpha1.TokenServer, name, image string, backoff int32, failFast []int32,
	source, target oauthv1alpha1.DatabaseRef, args ...string) *batchv1.Job {
	mounts, volumes := twoDatabases(source, target)
	job := &batchv1.Job{ObjectMeta: meta(ts, name, componentMigrations), Spec: batchv1.JobSpec{
		BackoffLimit: ptr.To(backoff),
		PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
			Action: batchv1.PodFailurePolicyActionFailJob,
			OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{ContainerName: ptr.To("db"),
				Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: failFast}}}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels(ts, componentMigrations)}, Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, ServiceAccountName: ServiceAccountName(ts),
			AutomountServiceAccountToken: ptr.To(false), SecurityContext: podSecurity(ServerUID),
			Containers: []corev1.Container{{Name: "db", Image: image, Args: append(args, "--termination-log", corev1.TerminationMessagePathDefault),
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts:             mounts, SecurityContext: restrictedReadOnly()}},
			Volumes: volumes,
		}},
	}}
	jobPod(ts, &job.Spec.Template)
	return job
}

// CopyJob runs `tokenserver db copy` from source into target. The bundled copy
// creates its database on the bundled server first. A failure another run would
// meet again (exit 3: a target that is not empty, a migration refused) fails the
// Job at once; others are retried, and a rerun of the same upgrade starts over.
// The copy is fenced when done, its servers forwarding to forwardTo (the serving
// color's) until the cutover: until then nothing but the replay may write it.
func CopyJob(ts *oauthv1alpha1.TokenServer, name, image, id, forwardTo string, source, target oauthv1alpha1.DatabaseRef) *batchv1.Job {
	args := []string{"db", "copy", "--source-dsn-file", mountSource + "/" + KeyDSN, "--target-dsn-file", mountTarget + "/" + KeyDSN,
		"--upgrade-id", id, "--forward-to", forwardTo}
	if ManagedDatabase(ts) {
		args = append(args, "--create-database")
	}
	return copyJobPod(ts, name, image, 3, []int32{MigrationFailedExitCode}, source, target, args...)
}

// CutoverJob runs `tokenserver db cutover` from the database that serves (from)
// to the other (to), in direction, the fenced servers forwarding to forwardTo
// afterwards. A lease that ran out (exit 4) fails the Job at once: the operator
// decides whether to try again. It runs at most cutoverDeadline: a pod that never
// starts (a quota, an image that cannot be pulled) or a run stuck after its marker
// would otherwise keep the upgrade in CuttingOver for good; a killed run is safe (a
// rerun resumes past the marker, and before it the lease frees the old side).
func CutoverJob(ts *oauthv1alpha1.TokenServer, name, image, id, direction, forwardTo string,
	from, to oauthv1alpha1.DatabaseRef) *batchv1.Job {
	j := copyJobPod(ts, name, image, 2, []int32{MigrationFailedExitCode, CutoverLeaseExpiredExitCode}, from, to,
		"db", "cutover", "--from-dsn-file", mountSource+"/"+KeyDSN, "--to-dsn-file", mountTarget+"/"+KeyDSN,
		"--upgrade-id", id, "--direction", direction, "--forward-to", forwardTo, "--lease", FenceLease(ts))
	j.Spec.ActiveDeadlineSeconds = ptr.To[int64](cutoverDeadline)
	return j
}

// cutoverDeadline: a cutover drains within its lease (at most 30 s) and then waits
// for the writers that passed the guard, each wait bounded by the lock timeout.
const cutoverDeadline = 600

// CleanupLockTimeout bounds each lock wait of `db cleanup`: dropping a trigger
// locks its table against token writes while it waits, so it gives up soon and
// tries again rather than stall them.
const CleanupLockTimeout = "2s"

// cleanupDeadline bounds a cleanup Job whose pod never starts (an image that cannot
// be pulled): the next upgrade waits for the cleanup to end, not for good.
const cleanupDeadline = 600

// CleanupJob runs `tokenserver db cleanup` on db, the database the serving version
// uses, once a Copy upgrade ended: capture, the fence's guard triggers and the
// kubeoauth_upgrade schema come off it; dropDatabase, when set, is dropped on the
// same server (the bundled copy after a rollback). It needs no other database.
// Retried 6 times (a lock it could not get within its timeouts); the end of a
// failed run's log is its termination message, which the operator records.
func CleanupJob(ts *oauthv1alpha1.TokenServer, name, image string, db oauthv1alpha1.DatabaseRef, dropDatabase string) *batchv1.Job {
	key := db.Key
	if key == "" {
		key = KeyDSN
	}
	args := []string{"db", "cleanup", "--dsn-file", mountDB + "/" + KeyDSN, "--lock-timeout", CleanupLockTimeout}
	if dropDatabase != "" {
		args = append(args, "--drop-database", dropDatabase)
	}
	job := &batchv1.Job{ObjectMeta: meta(ts, name, componentMigrations), Spec: batchv1.JobSpec{
		BackoffLimit: ptr.To[int32](6), ActiveDeadlineSeconds: ptr.To[int64](cleanupDeadline),
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels(ts, componentMigrations)}, Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, ServiceAccountName: ServiceAccountName(ts),
			AutomountServiceAccountToken: ptr.To(false), SecurityContext: podSecurity(ServerUID),
			Containers: []corev1.Container{{Name: "db", Image: image, Args: args,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts:             []corev1.VolumeMount{{Name: "db", MountPath: mountDB, ReadOnly: true}},
				SecurityContext:          restrictedReadOnly()}},
			Volumes: []corev1.Volume{secretVolume("db", db.SecretName, corev1.KeyToPath{Key: key, Path: KeyDSN})},
		}},
	}}
	jobPod(ts, &job.Spec.Template)
	return job
}

// ColorURL is the public port of one color's pods, through its headless Service:
// where a fenced color forwards requests after a cutover.
func ColorURL(ts *oauthv1alpha1.TokenServer, color string) string {
	return fmt.Sprintf("http://%s.%s.svc:%d", StatefulSetName(ts, color), ts.Namespace, PublicPort)
}

// ReplayDeployment runs `tokenserver db replay` from source to target in
// direction: one replica (two replayers would only wait on each other's advisory
// lock), its figures on the named metrics port, ready once a pass succeeded.
func ReplayDeployment(ts *oauthv1alpha1.TokenServer, name, image, id, direction string,
	source, target oauthv1alpha1.DatabaseRef) *appsv1.Deployment {
	mounts, volumes := twoDatabases(source, target)
	sel := map[string]string{LabelInstance: ts.Name, LabelComponent: componentReplay, LabelReplay: name}
	podLabels := labels(ts, componentReplay)
	podLabels[LabelReplay] = name
	probe := func(path string) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(portMetrics)}}
	}
	d := &appsv1.Deployment{ObjectMeta: meta(ts, name, componentReplay), Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1),
		Selector: &metav1.LabelSelector{MatchLabels: sel},
		// Never two at once: the old one stops before the new one starts.
		Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels}, Spec: corev1.PodSpec{
			ServiceAccountName: ServiceAccountName(ts), AutomountServiceAccountToken: ptr.To(false),
			SecurityContext: podSecurity(ServerUID), TerminationGracePeriodSeconds: ptr.To[int64](30),
			Containers: []corev1.Container{{Name: "replay", Image: image,
				Args: []string{"db", "replay", "--source-dsn-file", mountSource + "/" + KeyDSN, "--target-dsn-file", mountTarget + "/" + KeyDSN,
					"--upgrade-id", id, "--direction", direction, "--metrics-address", fmt.Sprintf(":%d", MetricsPort)},
				Ports:           []corev1.ContainerPort{{Name: portMetrics, ContainerPort: MetricsPort}},
				ReadinessProbe:  &corev1.Probe{ProbeHandler: probe("/readyz"), PeriodSeconds: 2, FailureThreshold: 2},
				LivenessProbe:   &corev1.Probe{ProbeHandler: probe("/healthz"), PeriodSeconds: 10, FailureThreshold: 3},
				VolumeMounts:    mounts,
				SecurityContext: restrictedReadOnly()}},
			Volumes: volumes,
		}},
	}}
	jobPod(ts, &d.Spec.Template)
	return d
}

// ReplaySelector selects the replay Deployments of a TokenServer and their pods.
func ReplaySelector(ts *oauthv1alpha1.TokenServer) map[string]string {
	return map[string]string{LabelInstance: ts.Name, LabelComponent: componentReplay}
}

// JobPodSelector selects the pods of ts's migration, copy, cutover and cleanup Jobs
// (the Job that made one is its controller).
func JobPodSelector(ts *oauthv1alpha1.TokenServer) map[string]string {
	return map[string]string{LabelInstance: ts.Name, LabelComponent: componentMigrations}
}
