package controllers_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// fakeKubelet stands in, in controller tests, for what envtest does not run: the
// StatefulSet, Job and EndpointSlice controllers and the kubelet. For one namespace
// it makes the pods of each StatefulSet (ready unless their image is in crashing),
// replaces a pod whose image the template changed, deletes pods past the replicas,
// writes the StatefulSets' status, keeps one EndpointSlice per Service with the
// pods its selector matches, and ends the Jobs the test lets end, with a pod whose
// termination message it chose. The end-to-end proof, with the real ones, is on
// the local cluster (make test-e2e).
type fakeKubelet struct {
	ns string
	// ip is every pod's address: one of this machine's, not loopback, which an
	// EndpointSlice may not hold.
	ip string
	// admin is where the admin Service's endpoints point (host:port): a proxy to
	// the suite's token server.
	admin string
	// metrics serves every pod's /metrics: requests and errors, which the test moves.
	metrics           *httptest.Server
	requests, errors5 atomic.Int64
	// replayMetrics serves every replay pod's /metrics: the pending changes and the
	// lag (in milliseconds) the test sets, as `tokenserver db replay` reports them.
	replayMetrics              *httptest.Server
	replayPending, replayLagMs atomic.Int64

	mu       sync.Mutex
	crashing map[string]bool
	// unschedulable: pod name to the scheduler's message for a pod it cannot place.
	unschedulable map[string]string
	// jobs: Job name suffix ("plan", "migrate-...") to its outcome once released.
	jobs map[string]jobOutcome
}

type jobOutcome struct {
	failed  bool
	message string
	// exit is a failed pod's exit code (1 when unset).
	exit int32
}

// startKubelet runs a fakeKubelet for ns until the test ends.
func startKubelet(t *testing.T, ns, admin string) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{ns: ns, ip: hostIP(t), admin: admin, crashing: map[string]bool{}, unschedulable: map[string]string{},
		jobs: map[string]jobOutcome{"migrate": {}}}
	k.metrics = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		req, errs := k.requests.Load(), k.errors5.Load()
		_, _ = fmt.Fprintf(w, "# TYPE kubeoauth_http_requests_total counter\n"+
			"kubeoauth_http_requests_total{code=\"200\",handler=\"token\"} %d\n"+
			"kubeoauth_http_requests_total{code=\"500\",handler=\"token\"} %d\n", req-errs, errs)
	}))
	l, err := net.Listen("tcp", net.JoinHostPort(k.ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	k.metrics.Listener = l
	k.metrics.Start()
	t.Cleanup(k.metrics.Close)
	k.replayMetrics = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintf(w, "# TYPE kubeoauth_replay_pending_changes gauge\nkubeoauth_replay_pending_changes %d\n"+
			"# TYPE kubeoauth_replay_lag_seconds gauge\nkubeoauth_replay_lag_seconds %g\n",
			k.replayPending.Load(), float64(k.replayLagMs.Load())/1000)
	}))
	if l, err = net.Listen("tcp", net.JoinHostPort(k.ip, "0")); err != nil {
		t.Fatal(err)
	}
	k.replayMetrics.Listener = l
	k.replayMetrics.Start()
	t.Cleanup(k.replayMetrics.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		last := ""
		for {
			if err := k.sync(ctx); err != nil && ctx.Err() == nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) &&
				!apierrors.IsAlreadyExists(err) && err.Error() != last {
				last = err.Error()
				t.Logf("fake kubelet: %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return k
}

// release lets the Jobs whose name ends in -suffix end, as outcome says.
func (k *fakeKubelet) release(suffix string, o jobOutcome) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.jobs[suffix] = o
}

// crash makes the pods of image never ready.
func (k *fakeKubelet) crash(image string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.crashing[image] = true
}

// schedule leaves the pod named pod Pending, unschedulable with message, as the
// scheduler does with a pod no node fits; "" lets it be placed.
func (k *fakeKubelet) schedule(pod, message string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if message == "" {
		delete(k.unschedulable, pod)
		return
	}
	k.unschedulable[pod] = message
}

func (k *fakeKubelet) sync(ctx context.Context) error {
	if err := k.statefulSets(ctx); err != nil {
		return err
	}
	if err := k.jobsPass(ctx); err != nil {
		return err
	}
	if err := k.replays(ctx); err != nil {
		return err
	}
	return k.slices(ctx)
}

// replays runs one ready pod per replay Deployment, its metrics on replayMetrics,
// and deletes the pods of Deployments that are gone (envtest collects no garbage).
func (k *fakeKubelet) replays(ctx context.Context) error {
	var deps appsv1.DeploymentList
	if err := k8s.List(ctx, &deps, client.InNamespace(k.ns)); err != nil {
		return err
	}
	want := map[string]*appsv1.Deployment{}
	for i := range deps.Items {
		if deps.Items[i].DeletionTimestamp == nil {
			want[deps.Items[i].Name+"-x"] = &deps.Items[i]
		}
	}
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(k.ns), client.HasLabels{resources.LabelReplay}); err != nil {
		return err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if want[p.Name] == nil {
			if err := k8s.Delete(ctx, p, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
				return err
			}
			continue
		}
		delete(want, p.Name)
	}
	_, port, _ := net.SplitHostPort(k.replayMetrics.Listener.Addr().String())
	metricsPort, _ := strconv.Atoi(port)
	for name, d := range want {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: k.ns, Name: name, Labels: d.Spec.Template.Labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptr.To(true)}}},
			Spec: *d.Spec.Template.Spec.DeepCopy()}
		p.Spec.Containers[0].Ports[0].ContainerPort = int32(metricsPort)
		if err := k8s.Create(ctx, p); err != nil {
			return err
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: k.ip, PodIPs: []corev1.PodIP{{IP: k.ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		if err := k8s.Status().Update(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

func (k *fakeKubelet) statefulSets(ctx context.Context) error {
	var sets appsv1.StatefulSetList
	if err := k8s.List(ctx, &sets, client.InNamespace(k.ns)); err != nil {
		return err
	}
	for i := range sets.Items {
		sts := &sets.Items[i]
		if sts.Labels[resources.LabelComponent] != "tokenserver" {
			if sts.Status.ReadyReplicas == 0 { // the database
				sts.Status = appsv1.StatefulSetStatus{Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, CurrentReplicas: 1,
					UpdatedReplicas: 1, ObservedGeneration: sts.Generation}
				if err := k8s.Status().Update(ctx, sts); err != nil {
					return err
				}
			}
			continue
		}
		if err := k.pods(ctx, sts); err != nil {
			return err
		}
	}
	return nil
}

// pods makes sts's pods match its template and replicas, and writes its status.
func (k *fakeKubelet) pods(ctx context.Context, sts *appsv1.StatefulSet) error {
	n := int(ptr.Deref(sts.Spec.Replicas, 1))
	image := sts.Spec.Template.Spec.Containers[0].Image
	var list corev1.PodList
	if err := k8s.List(ctx, &list, client.InNamespace(k.ns), client.MatchingLabels(sts.Spec.Selector.MatchLabels)); err != nil {
		return err
	}
	have := map[int]*corev1.Pod{}
	for i := range list.Items {
		p := &list.Items[i]
		ord, err := strconv.Atoi(strings.TrimPrefix(p.Name, sts.Name+"-"))
		if err != nil {
			continue
		}
		if ord >= n || p.Spec.Containers[0].Image != image {
			if err := k8s.Delete(ctx, p, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
				return err
			}
			continue
		}
		have[ord] = p
	}
	k.mu.Lock()
	ready := !k.crashing[image]
	k.mu.Unlock()
	readyCount, created := int32(0), int32(0)
	for ord := range n {
		p := have[ord]
		if p == nil {
			p = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: k.ns, Name: fmt.Sprintf("%s-%d", sts.Name, ord),
				Labels: sts.Spec.Template.Labels, Annotations: sts.Spec.Template.Annotations,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: sts.Name, UID: sts.UID,
					Controller: ptr.To(true)}}},
				Spec: *sts.Spec.Template.Spec.DeepCopy()}
			if k.metrics != nil {
				_, port, _ := net.SplitHostPort(k.metrics.Listener.Addr().String())
				metricsPort, _ := strconv.Atoi(port)
				for i, cp := range p.Spec.Containers[0].Ports {
					if cp.Name == "metrics" {
						p.Spec.Containers[0].Ports[i].ContainerPort = int32(metricsPort)
					}
				}
			}
			if err := k8s.Create(ctx, p); apierrors.IsForbidden(err) {
				// As the StatefulSet controller does (OrderedReady): the refusal in a
				// Warning event on the StatefulSet, no pod after it.
				if err := failedCreate(ctx, sts, p.Name, err); err != nil {
					return err
				}
				break
			} else if err != nil {
				return err
			}
		}
		created++
		k.mu.Lock()
		why, pending := k.unschedulable[p.Name]
		k.mu.Unlock()
		status := corev1.ConditionFalse
		if ready && !pending {
			status = corev1.ConditionTrue
			readyCount++
		}
		want := corev1.PodStatus{Phase: corev1.PodRunning, PodIP: k.ip, PodIPs: []corev1.PodIP{{IP: k.ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}}
		if pending { // as the scheduler leaves a pod it cannot place
			want = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled,
				Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: why}}}
		}
		if !equality.Semantic.DeepEqual(p.Status.Conditions, want.Conditions) || p.Status.PodIP != want.PodIP {
			p.Status = want
			if err := k8s.Status().Update(ctx, p); err != nil {
				return err
			}
		}
	}
	st := appsv1.StatefulSetStatus{Replicas: created, ReadyReplicas: readyCount, AvailableReplicas: readyCount,
		CurrentReplicas: created, UpdatedReplicas: created, ObservedGeneration: sts.Generation}
	if !equality.Semantic.DeepEqual(sts.Status, st) {
		sts.Status = st
		return k8s.Status().Update(ctx, sts)
	}
	return nil
}

// failedCreate records the Warning event the StatefulSet controller records when the
// API server refuses one of its pods (a quota, a LimitRange, PodSecurity, a webhook),
// in its words (recordPodEvent in pkg/controller/statefulset; the local cluster's
// kube-controller-manager writes the same, test/e2e deadline_test.go),
// through the core/v1 events API, as its recorder writes them. Once per pod and
// refusal: the controller's recorder aggregates repeats into one event too.
func failedCreate(ctx context.Context, sts *appsv1.StatefulSet, pod string, refusal error) error {
	now := metav1.Now()
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: sts.Namespace, Name: fmt.Sprintf("%s.%s-failedcreate", sts.Name, pod)},
		InvolvedObject: corev1.ObjectReference{APIVersion: "apps/v1", Kind: "StatefulSet", Namespace: sts.Namespace, Name: sts.Name,
			UID: sts.UID, ResourceVersion: sts.ResourceVersion},
		Reason: "FailedCreate", Type: corev1.EventTypeWarning, Count: 1, FirstTimestamp: now, LastTimestamp: now,
		Source:  corev1.EventSource{Component: "statefulset-controller"},
		Message: fmt.Sprintf("Create Pod %s in StatefulSet %s failed error: %s", pod, sts.Name, refusal)}
	return client.IgnoreAlreadyExists(k8s.Create(ctx, ev))
}

// jobsPass ends the released Jobs: a pod with the termination message, then the
// Job's conditions, as the Job controller and the kubelet would; and deletes the
// pods of Jobs that are gone, as the garbage collector would (envtest runs none).
func (k *fakeKubelet) jobsPass(ctx context.Context) error {
	var jobs batchv1.JobList
	if err := k8s.List(ctx, &jobs, client.InNamespace(k.ns)); err != nil {
		return err
	}
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(k.ns)); err != nil {
		return err
	}
	live := map[string]bool{}
	for i := range jobs.Items {
		live[string(jobs.Items[i].UID)] = true
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if c := metav1.GetControllerOf(pod); c != nil && c.Kind == "Job" && !live[string(c.UID)] && pod.DeletionTimestamp == nil {
			if err := k8s.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
				return err
			}
		}
	}
	for i := range jobs.Items {
		job := &jobs.Items[i]
		if len(job.Status.Conditions) > 0 {
			continue
		}
		k.mu.Lock()
		var o jobOutcome
		released := false
		for suffix, out := range k.jobs {
			if strings.HasSuffix(job.Name, "-"+suffix) || (suffix == "migrate" && strings.Contains(job.Name, "-migrate-")) {
				o, released = out, true
			}
		}
		k.mu.Unlock()
		if !released {
			continue
		}
		exit, phase := int32(0), corev1.PodSucceeded
		if o.failed {
			exit, phase = max(o.exit, 1), corev1.PodFailed
		}
		pod := jobPod(job)
		if err := k8s.Create(ctx, pod); client.IgnoreAlreadyExists(err) != nil {
			return err
		}
		pod.Status = corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{Name: pod.Spec.Containers[0].Name,
			Image: pod.Spec.Containers[0].Image, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: exit, Message: o.message}}}}}
		if err := k8s.Status().Update(ctx, pod); err != nil {
			return err
		}
		now := metav1.Now()
		if o.failed {
			job.Status = batchv1.JobStatus{StartTime: &now, Failed: 1, Conditions: []batchv1.JobCondition{
				{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, LastTransitionTime: now, Reason: "BackoffLimitExceeded"},
				{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, LastTransitionTime: now, Reason: "BackoffLimitExceeded",
					Message: "Job has reached the specified backoff limit"}}}
		} else {
			job.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &now, Succeeded: 1, Conditions: []batchv1.JobCondition{
				{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
		}
		if err := k8s.Status().Update(ctx, job); err != nil {
			return err
		}
	}
	return nil
}

// jobPod is a pod of job as the Job controller makes it: the template's labels and
// the Job's name among them, the Job its controller.
func jobPod(job *batchv1.Job) *corev1.Pod {
	podLabels := map[string]string{}
	maps.Copy(podLabels, job.Spec.Template.Labels)
	podLabels[batchv1.JobNameLabel] = job.Name
	podLabels[resources.LabelManagedBy] = resources.ManagedBy
	podLabels[resources.LabelInstance] = job.Labels[resources.LabelInstance]
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: job.Namespace, Name: job.Name + "-x", Labels: podLabels,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true)}}},
		Spec: *job.Spec.Template.Spec.DeepCopy()}
}

// slices keeps one EndpointSlice per token server Service, as the EndpointSlice
// controller would: the pods its selector matches, ready as they are. The admin
// Service's endpoints all point at k.admin.
func (k *fakeKubelet) slices(ctx context.Context) error {
	var svcs corev1.ServiceList
	if err := k8s.List(ctx, &svcs, client.InNamespace(k.ns)); err != nil {
		return err
	}
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(k.ns)); err != nil {
		return err
	}
	for i := range svcs.Items {
		svc := &svcs.Items[i]
		if svc.Labels[resources.LabelComponent] != "tokenserver" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		addr, port := k.ip, int32(4444)
		name := "http"
		if strings.HasSuffix(svc.Name, "-admin") {
			host, p, _ := net.SplitHostPort(k.admin)
			n, _ := strconv.Atoi(p)
			addr, port, name = host, int32(n), "admin"
		}
		var eps []discoveryv1.Endpoint
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		for j := range pods.Items {
			p := &pods.Items[j]
			if !sel.Matches(labels.Set(p.Labels)) || p.DeletionTimestamp != nil {
				continue
			}
			ready := false
			for _, c := range p.Status.Conditions {
				ready = ready || (c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue)
			}
			eps = append(eps, discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: k.ns, Name: p.Name, UID: p.UID}})
		}
		want := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: k.ns, Name: svc.Name + "-fake",
			Labels:          map[string]string{discoveryv1.LabelServiceName: svc.Name, resources.LabelManagedBy: resources.ManagedBy},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: ptr.To(true)}}},
			AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To(name), Port: ptr.To(port)}}}
		var have discoveryv1.EndpointSlice
		err := k8s.Get(ctx, client.ObjectKeyFromObject(want), &have)
		switch {
		case apierrors.IsNotFound(err):
			if err := k8s.Create(ctx, want); err != nil {
				return err
			}
		case err != nil:
			return err
		case !equality.Semantic.DeepEqual(have.Endpoints, want.Endpoints):
			have.Endpoints = want.Endpoints
			if err := k8s.Update(ctx, &have); err != nil {
				return err
			}
		}
	}
	return nil
}

// servingPods are the names of ns's pods that carry the serving label.
func servingPods(t *testing.T, ns string) []string {
	t.Helper()
	var pods corev1.PodList
	if err := k8s.List(context.Background(), &pods, client.InNamespace(ns),
		client.MatchingLabels{oauthv1alpha1.LabelServing: "true"}); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(pods.Items))
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	return names
}
