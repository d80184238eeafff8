package controllers_test

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// quotaNamespace is a namespace whose ResourceQuota counts CPU and memory
// requests and memory limits: the quota admission refuses a pod whose containers
// do not all state them, as a platform team's namespaces do. envtest runs no
// quota controller, so the test writes the status it would (hard, nothing used):
// the admission checks pods against it.
func quotaNamespace(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	ns := namespace(t, "quota", nil)
	hard := corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("20"),
		corev1.ResourceRequestsMemory: resource.MustParse("40Gi"), corev1.ResourceLimitsMemory: resource.MustParse("80Gi")}
	q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "compute"}, Spec: corev1.ResourceQuotaSpec{Hard: hard}}
	if err := k8s.Create(ctx, q); err != nil {
		t.Fatal(err)
	}
	q.Status = corev1.ResourceQuotaStatus{Hard: hard, Used: corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("0"),
		corev1.ResourceRequestsMemory: resource.MustParse("0"), corev1.ResourceLimitsMemory: resource.MustParse("0")}}
	if err := k8s.Status().Update(ctx, q); err != nil {
		t.Fatal(err)
	}
	// No service account controller either: the pods that name none use default.
	if err := k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}); err != nil &&
		!apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return ns
}

// admit asks the API server, with dry-run, to create a pod of tpl in ns: every
// admission plugin (the quota, the priority class, the service account) judges it
// as it would the pod a StatefulSet or Job controller creates. extra volumes stand
// for a StatefulSet's volume claim templates.
func admit(ns, name string, tpl corev1.PodTemplateSpec, extra ...corev1.Volume) (*corev1.Pod, error) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: tpl.Labels, Annotations: tpl.Annotations},
		Spec: *tpl.Spec.DeepCopy()}
	pod.Spec.Volumes = append(pod.Spec.Volumes, extra...)
	return pod, k8s.Create(context.Background(), pod, client.DryRunAll)
}

// admitted waits out the quota admission's cache of the quota's status (an error
// "status unknown for quota") and fails the test if the pod is refused otherwise.
func admitted(t *testing.T, ns, name string, tpl corev1.PodTemplateSpec, extra ...corev1.Volume) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	var err error
	eventually(t, 20*time.Second, "pod "+name+" admitted", func() bool {
		pod, err = admit(ns, name, tpl, extra...)
		return err == nil || !strings.Contains(err.Error(), "status unknown")
	}, func() string { return err.Error() })
	if err != nil {
		t.Fatalf("the namespace's admission refuses pod %s: %v", name, err)
	}
	// Requests below their limits: Burstable, the API server's own verdict.
	if pod.Status.QOSClass != corev1.PodQOSBurstable {
		t.Errorf("pod %s is of QoS class %q, want Burstable", name, pod.Status.QOSClass)
	}
	return pod
}

// TestTokenServerPodSettings creates a bundled TokenServer with pod settings in a
// namespace whose quota requires requests, and checks that the database, the
// migrations Job and the token server's StatefulSet carry the settings and that
// their pods pass the namespace's admission; then that changing the settings
// rolls the StatefulSet in place, with no blue-green upgrade.
func TestTokenServerPodSettings(t *testing.T) {
	ctx := context.Background()
	ns := quotaNamespace(t)
	pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: ns + "-identity"}, Value: 1000}
	if err := k8s.Create(ctx, pc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), pc) })
	settings := &oauthv1alpha1.PodSettings{
		Tolerations:       []oauthv1alpha1.Toleration{{Key: "dedicated", Operator: "Equal", Value: "identity", Effect: "NoSchedule"}},
		NodeSelector:      map[string]oauthv1alpha1.LabelValue{"kubernetes.io/os": "linux"},
		PriorityClassName: pc.Name,
		ImagePullSecrets:  []corev1.LocalObjectReference{{Name: "registry"}},
		Labels:            map[string]oauthv1alpha1.LabelValue{"team": "identity"},
		Annotations:       map[string]string{"example.com/owner": "identity"},
	}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), Image: "kubeoauth/tokenserver:test",
			Replicas: ptr.To[int32](3), Pod: settings,
			Database: &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{
				Pod: &oauthv1alpha1.PodSettings{Labels: map[string]oauthv1alpha1.LabelValue{"backup": "daily"}}}}}}
	if err := k8s.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ts) })

	// The database: its own settings, the default resources.
	var db appsv1.StatefulSet
	get(t, ns, "auth-db", &db)
	dbPod := db.Spec.Template
	if dbPod.Labels["backup"] != "daily" || dbPod.Labels["team"] != "" || dbPod.Spec.PriorityClassName != "" ||
		!reflect.DeepEqual(dbPod.Spec.Containers[0].Resources, resources.DatabaseResources) {
		t.Errorf("the database's pod template: labels %v, priority class %q, resources %v", dbPod.Labels,
			dbPod.Spec.PriorityClassName, dbPod.Spec.Containers[0].Resources)
	}
	admitted(t, ns, "auth-db-0", dbPod, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})

	// The migrations Job: spec.pod's scheduling, the Jobs' resources, a TTL.
	db.Status = appsv1.StatefulSetStatus{Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, CurrentReplicas: 1, UpdatedReplicas: 1,
		ObservedGeneration: db.Generation}
	if err := k8s.Status().Update(ctx, &db); err != nil {
		t.Fatal(err)
	}
	var job batchv1.Job
	get(t, ns, resources.MigrationJobName(ts, ts.Spec.Image), &job)
	if ttl := job.Spec.TTLSecondsAfterFinished; ttl == nil || *ttl != 3600 {
		t.Errorf("the migrations Job's ttlSecondsAfterFinished is %v, want the default 3600", ttl)
	}
	checkScheduling(t, "the migrations Job", job.Spec.Template, settings)
	if got := job.Spec.Template.Spec.Containers[0].Resources; !reflect.DeepEqual(got, resources.JobResources) {
		t.Errorf("the migrations Job's resources %v, want %v", got, resources.JobResources)
	}
	admitted(t, ns, "auth-migrate", job.Spec.Template)

	// The token server: spec.pod, default resources, spread across nodes.
	now := metav1.Now()
	job.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &now, Succeeded: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
	if err := k8s.Status().Update(ctx, &job); err != nil {
		t.Fatal(err)
	}
	var sts appsv1.StatefulSet
	get(t, ns, "auth-blue", &sts)
	checkScheduling(t, "StatefulSet auth-blue", sts.Spec.Template, settings)
	if got := sts.Spec.Template.Spec.Containers[0].Resources; !reflect.DeepEqual(got, resources.ServerResources) {
		t.Errorf("the token server's resources %v, want %v", got, resources.ServerResources)
	}
	spread := sts.Spec.Template.Spec.TopologySpreadConstraints
	if len(spread) != 1 || spread[0].TopologyKey != corev1.LabelHostname || spread[0].WhenUnsatisfiable != corev1.ScheduleAnyway {
		t.Errorf("three replicas spread as %+v, want across kubernetes.io/hostname, ScheduleAnyway", spread)
	}
	pod := admitted(t, ns, "auth-blue-0", sts.Spec.Template)
	if pod.Spec.Priority == nil || *pod.Spec.Priority != pc.Value {
		t.Errorf("the pod's priority is %v, want %s's %d", pod.Spec.Priority, pc.Name, pc.Value)
	}
	// The quota is real: the same pod without requests is refused.
	bare := *sts.Spec.Template.DeepCopy()
	bare.Spec.Containers[0].Resources = corev1.ResourceRequirements{}
	if _, err := admit(ns, "auth-blue-bare", bare); !apierrors.IsForbidden(err) {
		t.Fatalf("a pod without requests in the quota's namespace: %v, want Forbidden", err)
	}

	// A change of the settings rolls the StatefulSet in place: no second color.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(ts), ts); err != nil {
			return err
		}
		ts.Spec.Pod.Labels["tier"] = "gold"
		return k8s.Update(ctx, ts)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "auth-blue's pods labelled tier=gold", func() bool {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "auth-blue"}, &sts) == nil &&
			sts.Spec.Template.Labels["tier"] == "gold"
	}, nil)
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "auth-green"}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("a pod settings change made StatefulSet auth-green (%v): it must roll in place", err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(ts), ts); err != nil {
		t.Fatal(err)
	}
	if u := ts.Status.Upgrade; u != nil && u.ToImage != "" && u.ToImage != ts.Spec.Image {
		t.Errorf("a pod settings change started an upgrade: %+v", u)
	}
}

// TestJobsPodMetadata: with a sidecar asked for on spec.pod (Istio's label,
// Linkerd's annotation), spec.jobs.pod turns it off on the first install's
// migrations Job and on an upgrade's Jobs, as the API server stores them, and
// leaves the token server's StatefulSet with spec.pod's.
func TestJobsPodMetadata(t *testing.T) {
	advanceOperatorClock(t)
	ts, _ := upgradeServer(t, "jobsmeta", func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Pod = &oauthv1alpha1.PodSettings{
			Labels:      oauthv1alpha1.PodLabels{"team": "identity", "sidecar.istio.io/inject": "true"},
			Annotations: oauthv1alpha1.PodAnnotations{"linkerd.io/inject": "enabled"}}
		ts.Spec.Jobs.Pod = &oauthv1alpha1.JobPodMetadata{
			Labels:      oauthv1alpha1.PodLabels{"sidecar.istio.io/inject": "false", "kind": "batch"},
			Annotations: oauthv1alpha1.PodAnnotations{"linkerd.io/inject": "disabled"}}
	})
	ns := ts.Namespace
	jobPod := func(what string, tpl corev1.PodTemplateSpec) {
		t.Helper()
		if l, a := tpl.Labels, tpl.Annotations; l["team"] != "identity" || l["sidecar.istio.io/inject"] != "false" || l["kind"] != "batch" ||
			a["linkerd.io/inject"] != "disabled" || l[resources.LabelInstance] != "auth" {
			t.Errorf("%s: pod labels %v, annotations %v; want spec.jobs.pod's over spec.pod's", what, l, a)
		}
	}
	var job batchv1.Job
	get(t, ns, resources.MigrationJobName(ts, imageV1), &job)
	jobPod("the migrations Job", job.Spec.Template)

	var sts appsv1.StatefulSet
	get(t, ns, "auth-blue", &sts)
	if l, a := sts.Spec.Template.Labels, sts.Spec.Template.Annotations; l["sidecar.istio.io/inject"] != "true" || l["kind"] != "" ||
		a["linkerd.io/inject"] != "enabled" {
		t.Errorf("StatefulSet auth-blue: pod labels %v, annotations %v; want spec.pod's alone", l, a)
	}

	setImage(t, ts, imageV2)
	waitPhase(t, ts, oauthv1alpha1.UpgradePlanning)
	get(t, ns, upgrade.JobName("auth", ts.Status.Upgrade.ID, upgrade.JobPlan), &job)
	jobPod("the upgrade's plan Job", job.Spec.Template)
}

func checkScheduling(t *testing.T, what string, tpl corev1.PodTemplateSpec, want *oauthv1alpha1.PodSettings) {
	t.Helper()
	s := tpl.Spec
	// spec.pod as the pod template has it: what TestTokenServerPodSettings sets.
	tolerations := []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "identity",
		Effect: corev1.TaintEffectNoSchedule}}
	if !reflect.DeepEqual(s.Tolerations, tolerations) || !reflect.DeepEqual(s.NodeSelector, map[string]string{"kubernetes.io/os": "linux"}) ||
		s.PriorityClassName != want.PriorityClassName || !reflect.DeepEqual(s.ImagePullSecrets, want.ImagePullSecrets) ||
		tpl.Labels["team"] != "identity" || tpl.Annotations["example.com/owner"] != "identity" {
		t.Errorf("%s: tolerations %v, node selector %v, priority class %q, pull secrets %v, labels %v, annotations %v", what,
			s.Tolerations, s.NodeSelector, s.PriorityClassName, s.ImagePullSecrets, tpl.Labels, tpl.Annotations)
	}
}

// TestRefusedStatefulSetStalls: a StatefulSet the API server refuses (here a
// ValidatingAdmissionPolicy of the platform team's, as a cluster that asks every
// workload for a cost-center label has) is refused again on every retry: the
// TokenServer reads Stalled, not Reconciling forever, and says what was refused and
// why, with a Warning event. Once the policy is gone, it goes on by itself.
func TestRefusedStatefulSetStalls(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "refused", nil)
	const why = "every workload needs a cost-center pod label"
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: "cost-center-" + ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}},
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule: admissionregistrationv1.Rule{APIGroups: []string{"apps"}, APIVersions: []string{"v1"},
						Resources: []string{"statefulsets"}}}}}},
			Validations: []admissionregistrationv1.Validation{{
				Expression: "has(object.spec.template.metadata.labels) && 'cost-center' in object.spec.template.metadata.labels",
				Message:    why}}}}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}}}
	for _, obj := range []client.Object{policy, binding} {
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
	}
	// The API server loads a policy in the background: wait until it refuses.
	probe := func() error {
		sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}, Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "probe"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "probe"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
		return k8s.Create(ctx, sts, client.DryRunAll)
	}
	eventually(t, 20*time.Second, "the policy refuses StatefulSets", func() bool { return apierrors.IsInvalid(probe()) }, nil)

	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), Image: "kubeoauth/tokenserver:test",
			Database: &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{}}}}
	if err := k8s.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ts) })
	waitCondition(t, ts, oauthv1alpha1.ConditionStalled, metav1.ConditionTrue, controllers.ReasonRefusedByAPIServer)
	for _, c := range ts.Status.Conditions {
		if c.Type == oauthv1alpha1.ConditionStalled && (!strings.Contains(c.Message, "StatefulSet auth-db") || !strings.Contains(c.Message, why)) {
			t.Errorf("Stalled does not say what was refused and why: %q", c.Message)
		}
		if c.Type == oauthv1alpha1.ConditionReconciling {
			t.Errorf("Reconciling beside Stalled: %+v", c)
		}
	}
	if note := waitWarning(t, ns, ts.Name, controllers.ReasonRefusedByAPIServer); !strings.Contains(note, why) {
		t.Errorf("the Warning event says %q, not the policy's message", note)
	}

	for _, obj := range []client.Object{binding, policy} {
		if err := k8s.Delete(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "the policy no longer refuses", func() bool { return probe() == nil }, nil)
	poke(t, ts) // or the next requeue, within 30 s
	waitCondition(t, ts, oauthv1alpha1.ConditionReconciling, metav1.ConditionTrue, controllers.ReasonWaitingForDatabase)
	if _, _, ok := statefulSet(t, ns, "auth-db"); !ok {
		t.Error("no database StatefulSet once the policy is gone")
	}
	for _, c := range ts.Status.Conditions {
		if c.Type == oauthv1alpha1.ConditionStalled {
			t.Errorf("still Stalled: %+v", c)
		}
	}
}
