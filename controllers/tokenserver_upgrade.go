package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// The upgrade reads pods (color, ordinal, image, readiness; the plan Job's
// termination message) and moves the serving label on them.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch

// metricsScrapeTimeout bounds one pod's /metrics; a pod slower than that counts
// as unreadable (a failed analysis check), not as a stuck reconcile.
const metricsScrapeTimeout = 3 * time.Second

// metricsClient scrapes pods directly: never through an HTTP proxy the operator's
// environment may name, which could not reach pod addresses.
var metricsClient = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}}

// upgradeStep observes the cluster, asks internal/upgrade what to do, writes the
// intent to status and acts on it. It returns the decision's conditions
// (Progressing and Degraded, which then are the upgrade's) and when to look again.
func (r *TokenServerReconciler) upgradeStep(ctx context.Context, ts *oauthv1alpha1.TokenServer, in resources.Inputs) (
	[]metav1.Condition, time.Duration, error) {
	o, pods, err := r.observe(ctx, ts)
	if err != nil {
		return nil, 0, err
	}
	now := r.Clock.Now()
	d := upgrade.Next(o, now)
	if d.WriteStatus {
		// The intent first, with an optimistic lock: two passes on stale copies must
		// not both start an upgrade, and a crash after this write resumes from it.
		base := ts.DeepCopy()
		ts.Status.ActiveColor, ts.Status.FailedImage, ts.Status.FailedSettings, ts.Status.Upgrade, ts.Status.Database =
			string(d.Status.ActiveColor), d.Status.FailedImage, d.Status.FailedSettings, d.Status.Upgrade, d.Status.Database
		if err := r.Status().Patch(ctx, ts, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			ts.Status = base.Status
			if apierrors.IsConflict(err) {
				// A newer TokenServer exists (its watch event brings the next pass): act
				// on nothing, and let the pass report the server as it is, with the
				// upgrade's conditions as they were. Ready must not flap because of
				// a write that merely lost a race.
				return conditionsOf(ts.Status.Conditions, oauthv1alpha1.ConditionProgressing, oauthv1alpha1.ConditionDegraded),
					time.Second, nil
			}
			return nil, 0, fmt.Errorf("write the upgrade's intent to status: %w", err)
		}
	}
	// A change that rolls pods (config, spec fields in the pod template) waits
	// while both colors run (upgrade.HoldsRollouts); see heldStatefulSets.
	hold := upgrade.HoldsRollouts(ts.Spec.Upgrade, &oauthv1alpha1.TokenServerStatus{Upgrade: d.Status.Upgrade}, now)
	for _, s := range heldStatefulSets(d.StatefulSets, o.StatefulSets, hold) {
		in.Color, in.Image, in.Replicas, in.Database = string(s.Color), s.Image, s.Replicas, nil
		if db, ok := d.Databases[s.Color]; ok {
			in.Database = &db
		}
		for _, obj := range []client.Object{resources.TokenServerStatefulSet(ts, in), resources.HeadlessService(ts, in.Color)} {
			if err := r.apply(ctx, ts, obj); err != nil {
				return nil, 0, err
			}
		}
	}
	if err := r.ensureCopySecret(ctx, ts, d.TargetSecret); err != nil {
		return nil, 0, err
	}
	if err := r.deleteJobs(ctx, ts, d.DeleteJobs); err != nil {
		return nil, 0, err
	}
	for _, j := range d.Jobs {
		if err := r.createUpgradeJob(ctx, ts, j); err != nil {
			return nil, 0, err
		}
	}
	if err := r.applyReplays(ctx, ts, d.Replays); err != nil {
		return nil, 0, err
	}
	for _, l := range d.Labels {
		if err := r.setServing(ctx, ts.Namespace, l); err != nil {
			return nil, 0, err
		}
	}
	for _, e := range d.Events {
		r.Recorder.Eventf(ts, nil, e.Type, e.Reason, "Upgrade", "%s", e.Message)
	}
	if img, ok := upgrade.CurrentImage(o.Pods, d.Labels); ok {
		ts.Status.CurrentImage = img
	}
	if err := r.applyServices(ctx, ts, pods); err != nil {
		return nil, 0, err
	}
	due, err := r.deleteExpiredJobs(ctx, ts, d.Status.Upgrade, now)
	if err != nil {
		return nil, 0, err
	}
	if due > 0 && (d.RequeueAfter == 0 || due < d.RequeueAfter) {
		d.RequeueAfter = due
	}
	return d.Conditions, d.RequeueAfter, nil
}

// conditionsOf are the conditions of those types in conds, unchanged.
func conditionsOf(conds []metav1.Condition, kinds ...string) []metav1.Condition {
	var out []metav1.Condition
	for _, t := range kinds {
		if c := meta.FindStatusCondition(conds, t); c != nil {
			out = append(out, *c)
		}
	}
	return out
}

// heldStatefulSets are the StatefulSets to apply. While hold, a color whose
// StatefulSet already has the decided image and replicas is not applied: the apply
// could only carry a change of its pod template (the config hash: keys, scope
// descriptions, the users Secret; spec fields such as spec.tokens), which would roll
// its pods while traffic moves, both colors at once. Such changes are applied when
// the hold ends. A color whose image or replicas change gets new pods anyway and
// takes the current template with them. Pure: table-tested.
func heldStatefulSets(want []upgrade.StatefulSetIntent, observed map[upgrade.Color]upgrade.StatefulSet,
	hold bool) []upgrade.StatefulSetIntent {
	if !hold {
		return want
	}
	var out []upgrade.StatefulSetIntent
	for _, s := range want {
		if o, ok := observed[s.Color]; ok && o.Image == s.Image && o.Replicas == s.Replicas {
			continue
		}
		out = append(out, s)
	}
	return out
}

// applyServices applies the public and admin Services with serviceSelector.
func (r *TokenServerReconciler) applyServices(ctx context.Context, ts *oauthv1alpha1.TokenServer, pods []upgrade.Pod) error {
	var svc corev1.Service
	err := r.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: resources.PublicServiceName(ts)}, &svc)
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("get Service %s: %w", resources.PublicServiceName(ts), err)
	}
	sel := serviceSelector(ts, svc.Spec.Selector, pods)
	for _, obj := range []client.Object{resources.PublicService(ts, sel), resources.AdminService(ts, sel)} {
		if err := r.apply(ctx, ts, obj); err != nil {
			return err
		}
	}
	return nil
}

// serviceSelector is what the public and admin Services select, given the public
// Service's current selector (nil: none yet): the serving label. An install made
// before it selected one color, and keeps doing so until every pod of that color
// carries the label (the upgrade puts it on in its first pass), so that the switch
// never leaves the Services without the pods that serve. Pure: table-tested.
func serviceSelector(ts *oauthv1alpha1.TokenServer, current map[string]string, pods []upgrade.Pod) map[string]string {
	old := current[resources.LabelColor]
	if old == "" {
		return resources.ServingSelector(ts)
	}
	labelled := false
	for _, p := range pods {
		if string(p.Color) != old {
			continue
		}
		if labelled = p.Serving; !labelled {
			break
		}
	}
	if !labelled {
		return resources.ServerSelector(ts, old)
	}
	return resources.ServingSelector(ts)
}

// observe gathers the facts upgrade.Next decides from.
func (r *TokenServerReconciler) observe(ctx context.Context, ts *oauthv1alpha1.TokenServer) (upgrade.Observed, []upgrade.Pod, error) {
	o := upgrade.Observed{Name: ts.Name, Annotations: ts.Annotations,
		Spec: upgrade.Spec{Image: ts.Spec.Image, Replicas: ptr.Deref(ts.Spec.Replicas, 1), Upgrade: ts.Spec.Upgrade,
			Database: specDatabase(ts), External: ts.Spec.Database != nil && ts.Spec.Database.External != nil},
		Status: upgrade.Status{ActiveColor: upgrade.Color(ts.Status.ActiveColor), FailedImage: ts.Status.FailedImage,
			FailedSettings: ts.Status.FailedSettings, Upgrade: ts.Status.Upgrade, Database: ts.Status.Database},
		StatefulSets: map[upgrade.Color]upgrade.StatefulSet{}, Jobs: map[upgrade.JobKind]upgrade.Job{}}
	sets := map[upgrade.Color]types.UID{}
	for _, c := range []upgrade.Color{upgrade.Blue, upgrade.Green} {
		var sts appsv1.StatefulSet
		err := r.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: resources.StatefulSetName(ts, string(c))}, &sts)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return o, nil, fmt.Errorf("get StatefulSet %s: %w", resources.StatefulSetName(ts, string(c)), err)
		}
		if !metav1.IsControlledBy(&sts, ts) || len(sts.Spec.Template.Spec.Containers) == 0 {
			continue
		}
		sets[c] = sts.UID
		o.StatefulSets[c] = upgrade.StatefulSet{Image: sts.Spec.Template.Spec.Containers[0].Image, Replicas: ptr.Deref(sts.Spec.Replicas, 1)}
	}
	pods, ips, err := r.serverPods(ctx, ts, sets)
	if err != nil {
		return o, nil, err
	}
	o.Pods = pods
	if err := r.observeJobs(ctx, ts, &o); err != nil {
		return o, nil, err
	}
	if o.Endpoints, err = r.servingEndpoints(ctx, ts, pods); err != nil {
		return o, nil, err
	}
	if u := ts.Status.Upgrade; u != nil {
		if u.Copy != nil {
			if o.ReplayPods, err = r.replayPods(ctx, ts, r.Clock.Now()); err != nil {
				return o, nil, err
			}
			if o.CopyPods, err = r.jobPods(ctx, ts, upgrade.JobName(ts.Name, u.ID, upgrade.JobCopy), r.Clock.Now()); err != nil {
				return o, nil, err
			}
		}
		switch {
		case u.Copy != nil && (u.Phase == oauthv1alpha1.UpgradeReplaying || u.Phase == oauthv1alpha1.UpgradePaused):
			// Paused too: a promotion goes through the same gate, on fresh figures.
			o.Replay = r.scrapeReplay(ctx, ts, u, upgrade.Forward)
		case u.Copy != nil && u.Copy.CutoverAt != nil && !u.Copy.CutBack && (u.Phase == oauthv1alpha1.UpgradeScalingDown ||
			u.Phase == oauthv1alpha1.UpgradeRollbackWindow || u.Phase == oauthv1alpha1.UpgradeRollingBack):
			// After the cutover: whether a rollback has the new version's writes.
			o.Replay = r.scrapeReplay(ctx, ts, u, upgrade.Backward)
		case u.Phase == oauthv1alpha1.UpgradeVerifying, u.Phase == oauthv1alpha1.UpgradePaused, u.Phase == oauthv1alpha1.UpgradePromoting:
			o.Metrics = scrapeColor(ctx, pods, ips, upgrade.Color(u.ToColor))
		}
	}
	if w := ts.Spec.Upgrade.Window; w != nil {
		name := w.TimeZone
		if name == "" {
			name = "UTC"
		}
		if loc, err := time.LoadLocation(name); err == nil {
			o.Location = loc
		}
	}
	return o, pods, nil
}

// serverPods are the pods of the token server's StatefulSets (sets: their UIDs by
// color), with the address and port of each one's metrics. A pod that merely carries
// the labels, made by someone else, is not one of them.
func (r *TokenServerReconciler) serverPods(ctx context.Context, ts *oauthv1alpha1.TokenServer, sets map[upgrade.Color]types.UID) (
	[]upgrade.Pod, map[string]string, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(ts.Namespace), client.MatchingLabels(resources.ServerPodSelector(ts))); err != nil {
		return nil, nil, fmt.Errorf("list the token server pods: %w", err)
	}
	var pods []upgrade.Pod
	metrics := map[string]string{}
	for i := range list.Items {
		p := &list.Items[i]
		color := upgrade.Color(p.Labels[resources.LabelColor])
		owner := metav1.GetControllerOf(p)
		if owner == nil || sets[color] == "" || owner.UID != sets[color] || len(p.Spec.Containers) == 0 {
			continue
		}
		ordinal, err := strconv.Atoi(strings.TrimPrefix(p.Name, resources.StatefulSetName(ts, string(color))+"-"))
		if err != nil {
			continue
		}
		ready := false
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				ready = c.Status == corev1.ConditionTrue
			}
		}
		pods = append(pods, upgrade.Pod{Name: p.Name, Color: color, Ordinal: ordinal, Image: p.Spec.Containers[0].Image,
			Ready: ready && p.DeletionTimestamp == nil, Serving: p.Labels[oauthv1alpha1.LabelServing] == "true",
			Terminating: p.DeletionTimestamp != nil})
		port := int32(resources.MetricsPort)
		for _, cp := range p.Spec.Containers[0].Ports {
			if cp.Name == "metrics" {
				port = cp.ContainerPort
			}
		}
		if p.Status.PodIP != "" {
			metrics[p.Name] = net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port)))
		}
	}
	return pods, metrics, nil
}

// observeJobs reads the current upgrade's Jobs by their deterministic names and,
// once the plan Job succeeded, its result.
func (r *TokenServerReconciler) observeJobs(ctx context.Context, ts *oauthv1alpha1.TokenServer, o *upgrade.Observed) error {
	u := ts.Status.Upgrade
	if u == nil || u.ID == "" {
		return nil
	}
	for _, kind := range []upgrade.JobKind{upgrade.JobPlan, upgrade.JobExpand, upgrade.JobVerify, upgrade.JobContract,
		upgrade.JobCopy, upgrade.JobCutover, upgrade.JobCutback, upgrade.JobCleanup} {
		var job batchv1.Job
		name := upgrade.UpgradeJobName(ts.Name, u, kind)
		err := r.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: name}, &job)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get Job %s: %w", name, err)
		}
		if !metav1.IsControlledBy(&job, ts) {
			continue // a Job of that name someone else made says nothing of this upgrade
		}
		j := upgrade.Job{State: upgrade.JobRunning}
		for _, c := range job.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case batchv1.JobComplete:
				j.State = upgrade.JobSucceeded
			case batchv1.JobFailed:
				j.State, j.Message = upgrade.JobFailed, c.Message
			}
		}
		if j.State == upgrade.JobFailed {
			if msg, exit, _ := r.terminationMessage(ctx, &job, false); msg != "" || exit != 0 {
				j.ExitCode = exit
				if msg != "" {
					j.Message = strings.TrimSpace(j.Message + ": " + msg)
				}
			}
		}
		if j.State == upgrade.JobSucceeded && kind != upgrade.JobExpand && kind != upgrade.JobVerify && kind != upgrade.JobContract &&
			kind != upgrade.JobCleanup {
			msg, _, err := r.terminationMessage(ctx, &job, true)
			if err != nil {
				return err
			}
			if kind == upgrade.JobPlan {
				o.Plan = parsePlan(msg)
			}
			j.Output = msg
		}
		o.Jobs[kind] = j
	}
	return nil
}

// terminationMessage is the termination message and exit code of a pod of job
// that ended as succeeded says (exit code 0, or not); "" when there is none yet.
func (r *TokenServerReconciler) terminationMessage(ctx context.Context, job *batchv1.Job, succeeded bool) (string, int32, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(job.Namespace), client.MatchingLabels{batchv1.JobNameLabel: job.Name}); err != nil {
		return "", 0, fmt.Errorf("list the pods of Job %s: %w", job.Name, err)
	}
	msg, exit := "", int32(0)
	for i := range list.Items {
		p := &list.Items[i]
		if !metav1.IsControlledBy(p, job) {
			continue
		}
		for _, cs := range p.Status.ContainerStatuses {
			if t := cs.State.Terminated; t != nil && (t.ExitCode == 0) == succeeded {
				exit = t.ExitCode
				if t.Message != "" {
					msg = t.Message
				}
			}
		}
	}
	return msg, exit, nil
}

// parsePlan reads the plan Job's termination message. A message that is no plan is
// reported as one with no mode, which the upgrade refuses, quoting it: better than
// waiting for a result that will never come.
func parsePlan(msg string) *upgrade.PlanResult {
	if msg == "" {
		return nil // the Job succeeded but its pod is not seen yet
	}
	var p upgrade.PlanResult
	if err := json.Unmarshal([]byte(msg), &p); err != nil {
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		return &upgrade.PlanResult{Reason: fmt.Sprintf("the plan Job's termination message is not a plan (%v): %q", err, msg)}
	}
	return &p
}

// servingEndpoints counts, per color, the ready endpoints of the public Service's
// EndpointSlices: what actually receives traffic. Only slices the Service controls
// count (see readyAdminURL).
func (r *TokenServerReconciler) servingEndpoints(ctx context.Context, ts *oauthv1alpha1.TokenServer, pods []upgrade.Pod) (
	map[upgrade.Color]int32, error) {
	out := map[upgrade.Color]int32{}
	var svc corev1.Service
	err := r.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: resources.PublicServiceName(ts)}, &svc)
	if apierrors.IsNotFound(err) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get Service %s: %w", resources.PublicServiceName(ts), err)
	}
	var slices discoveryv1.EndpointSliceList
	if err := r.List(ctx, &slices, client.InNamespace(ts.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
		return nil, fmt.Errorf("list the EndpointSlices of Service %s: %w", svc.Name, err)
	}
	color := map[string]upgrade.Color{}
	for _, p := range pods {
		color[p.Name] = p.Color
	}
	seen := map[string]bool{}
	for i := range slices.Items {
		s := &slices.Items[i]
		if !metav1.IsControlledBy(s, &svc) {
			continue
		}
		for _, e := range s.Endpoints {
			if e.TargetRef == nil || e.TargetRef.Kind != "Pod" || !ptr.Deref(e.Conditions.Ready, false) || seen[e.TargetRef.Name] {
				continue
			}
			if c, ok := color[e.TargetRef.Name]; ok {
				seen[e.TargetRef.Name] = true
				out[c]++
			}
		}
	}
	return out, nil
}

// scrapeColor sums the counters of every pod of color, per endpoint; nil when a
// pod has no address or its metrics cannot be read: the analysis then fails the
// check rather than judging part of the color.
func scrapeColor(ctx context.Context, pods []upgrade.Pod, addrs map[string]string, color upgrade.Color) upgrade.Metrics {
	sum := upgrade.Metrics{}
	n := 0
	for _, p := range pods {
		if p.Color != color {
			continue
		}
		addr, ok := addrs[p.Name]
		if !ok {
			return nil
		}
		m, err := scrape(ctx, "http://"+addr+"/metrics")
		if err != nil {
			// Only the log says why a step waits or fails on its metrics.
			log.FromContext(ctx).Info("the metrics of a pod of the new color could not be read", "pod", p.Name, "error", err.Error())
			return nil
		}
		for e, c := range m {
			s := sum[e]
			s.Requests += c.Requests
			s.Errors += c.Errors
			sum[e] = s
		}
		n++
	}
	if n == 0 {
		return nil
	}
	return sum
}

// scrapeFamilies reads a Prometheus text exposition at url within
// metricsScrapeTimeout.
func scrapeFamilies(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsScrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return families, nil
}

// scrape reads kubeoauth_http_requests_total from one token server's metrics, per
// endpoint: requests, without the 4xx answers (the caller's own errors, which anyone
// can send to pad the count), and those answered with a 5xx code.
func scrape(ctx context.Context, url string) (upgrade.Metrics, error) {
	families, err := scrapeFamilies(ctx, url)
	if err != nil {
		return nil, err
	}
	f, ok := families["kubeoauth_http_requests_total"]
	if !ok {
		// A counter with labels has no series before its first request: a token
		// server (it always has its build info) that served none yet counts zero,
		// as the green pods of later steps do; anything else is no token server.
		if _, ours := families["kubeoauth_build_info"]; ours {
			return upgrade.Metrics{}, nil
		}
		return nil, fmt.Errorf("%s has no kubeoauth_http_requests_total", url)
	}
	m := upgrade.Metrics{}
	for _, s := range f.GetMetric() {
		v := int64(s.GetCounter().GetValue())
		var endpoint, code string
		for _, l := range s.GetLabel() {
			switch l.GetName() {
			// Token servers before 0.2.0 called the label "endpoint"; an upgrade
			// from one reads the old colour's series by that name.
			case "handler", "endpoint":
				endpoint = l.GetValue()
			case "code":
				code = l.GetValue()
			}
		}
		if strings.HasPrefix(code, "4") {
			continue
		}
		c := m[endpoint]
		c.Requests += v
		if strings.HasPrefix(code, "5") {
			c.Errors += v
		}
		m[endpoint] = c
	}
	return m, nil
}

// createUpgradeJob creates the Job j asks for, owned by ts. One that exists already
// (a pass that crashed after creating it) is left as it is: no Job runs twice.
func (r *TokenServerReconciler) createUpgradeJob(ctx context.Context, ts *oauthv1alpha1.TokenServer, j upgrade.JobIntent) error {
	u := ts.Status.Upgrade
	var job *batchv1.Job
	switch j.Kind {
	case upgrade.JobPlan:
		job = resources.PlanJob(ts, j.Name, j.Image)
	case upgrade.JobExpand:
		job = resources.ExpandJob(ts, j.Name, j.Image)
	case upgrade.JobVerify:
		job = resources.VerifyJob(ts, j.Name, j.Image, u.ToColor, u.FromColor)
	case upgrade.JobContract:
		job = resources.ContractJob(ts, j.Name, j.Image)
	case upgrade.JobCopy, upgrade.JobCutover, upgrade.JobCutback, upgrade.JobCleanup:
		if job = copyJob(ts, u, j); job == nil {
			return fmt.Errorf("the Job %s of a Copy upgrade without status.upgrade.copy", j.Name)
		}
	default:
		return fmt.Errorf("unknown upgrade Job kind %q", j.Kind)
	}
	if err := controllerutil.SetControllerReference(ts, job, r.Scheme()); err != nil {
		return fmt.Errorf("create Job %s: %w", job.Name, err)
	}
	if err := r.Create(ctx, job); err != nil && !apierrors.IsAlreadyExists(err) {
		return refusal("create", "Job", job.Name, err)
	}
	return nil
}

// sweepVerifyClients deletes the temporary clients `tokenserver verify` registers
// (ID prefix adminapi.VerifyClientIDPrefix, no owner) once no verification can be
// using them: the Job deletes its own when it ends, but not when it was abandoned
// (a rollback during Verifying took green's admin API, through which it deletes;
// the TokenServer was deleted mid-verify, its database kept). clients were listed
// before ts was read, as in the owner sweep. Only a bundled server's: on an
// external one another installation may be verifying. A verification that may run
// keeps them all: the phase Verifying is written before its Job is created, and the
// Job exists (unfinished) before its pod can register a client.
func sweepVerifyClients(ctx context.Context, c client.Reader, ts *oauthv1alpha1.TokenServer, clients []adminapi.ClientStatus,
	admin *adminapi.HTTPClient) ([]string, error) {
	if ts.Spec.External != nil {
		return nil, nil
	}
	var stale []string
	for _, cl := range clients {
		if cl.OwnerNamespace == "" && strings.HasPrefix(cl.ID, adminapi.VerifyClientIDPrefix) {
			stale = append(stale, cl.ID)
		}
	}
	if len(stale) == 0 || (ts.Status.Upgrade != nil && ts.Status.Upgrade.Phase == oauthv1alpha1.UpgradeVerifying) {
		return nil, nil
	}
	var jobs batchv1.JobList
	if err := c.List(ctx, &jobs, client.InNamespace(ts.Namespace), client.MatchingLabels(resources.VerifySelector(ts))); err != nil {
		return nil, fmt.Errorf("list the verification Jobs: %w", err)
	}
	for i := range jobs.Items {
		j := &jobs.Items[i]
		finished := false
		for _, cond := range j.Status.Conditions {
			finished = finished || ((cond.Type == batchv1.JobComplete || cond.Type == batchv1.JobFailed) && cond.Status == corev1.ConditionTrue)
		}
		if !finished {
			return nil, nil // a verification still runs: its client may be among them
		}
	}
	var deleted []string
	for _, id := range stale {
		if err := admin.DeleteClient(ctx, id, ""); err != nil && !errors.Is(err, adminapi.ErrNotFound) {
			return deleted, fmt.Errorf("delete the leftover verification client %s: %w", id, err)
		}
		deleted = append(deleted, id)
	}
	return deleted, nil
}

// setServing puts the serving label on a pod or takes it off, with a merge patch of
// that one label: the StatefulSet controller owns the rest of the pod.
func (r *TokenServerReconciler) setServing(ctx context.Context, ns string, l upgrade.LabelIntent) error {
	var value any // null removes the label
	if l.Serving {
		value = "true"
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{oauthv1alpha1.LabelServing: value}}})
	if err != nil {
		return err
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: l.Pod}}
	if err := r.Patch(ctx, pod, client.RawPatch(types.MergePatchType, patch)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("label pod %s %s=%v: %w", l.Pod, oauthv1alpha1.LabelServing, l.Serving, err)
	}
	return nil
}

// withUpgrade overlays the upgrade's Progressing and Degraded on the pass's
// conditions: while and after an upgrade they say what it does; Ready stays the
// pass's, True while the old version serves.
func withUpgrade(conds, upgradeConds []metav1.Condition) []metav1.Condition {
	for _, u := range upgradeConds {
		for i := range conds {
			if conds[i].Type == u.Type {
				conds[i] = u
			}
		}
		if meta.FindStatusCondition(conds, u.Type) == nil {
			conds = append(conds, u)
		}
	}
	return conds
}
