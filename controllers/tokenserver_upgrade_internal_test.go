package controllers

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// TestServiceSelector: a new install selects the serving label at once; one made
// before it keeps its color until every pod of that color carries the label.
func TestServiceSelector(t *testing.T) {
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "auth"}}
	blue, serving := resources.ServerSelector(ts, "blue"), resources.ServingSelector(ts)
	pod := func(name string, c upgrade.Color, labelled bool) upgrade.Pod {
		return upgrade.Pod{Name: name, Color: c, Ready: true, Serving: labelled}
	}
	tests := map[string]struct {
		current map[string]string
		pods    []upgrade.Pod
		want    map[string]string
	}{
		"new install":                  {want: serving},
		"already on the label":         {current: serving, pods: []upgrade.Pod{pod("auth-blue-0", upgrade.Blue, false)}, want: serving},
		"old install, no pod labelled": {current: blue, pods: []upgrade.Pod{pod("auth-blue-0", upgrade.Blue, false)}, want: blue},
		"old install, one of two":      {current: blue, pods: []upgrade.Pod{pod("auth-blue-0", upgrade.Blue, true), pod("auth-blue-1", upgrade.Blue, false)}, want: blue},
		"old install, all labelled":    {current: blue, pods: []upgrade.Pod{pod("auth-blue-0", upgrade.Blue, true), pod("auth-blue-1", upgrade.Blue, true)}, want: serving},
		"old install, no pods of blue": {current: blue, pods: []upgrade.Pod{pod("auth-green-0", upgrade.Green, true)}, want: blue},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := serviceSelector(ts, tt.current, tt.pods); !maps.Equal(got, tt.want) {
				t.Errorf("selector %v, want %v", got, tt.want)
			}
		})
	}
}

// TestParsePlan: the plan Job's termination message; one that is no plan is
// reported as a plan without a mode, quoted, which the upgrade refuses.
func TestParsePlan(t *testing.T) {
	if p := parsePlan(""); p != nil {
		t.Errorf("no message yet: %+v, want nil (wait)", p)
	}
	p := parsePlan(`{"mode":"Shared","schemaFrom":5,"schemaTo":6,"reason":"expand only"}`)
	if p == nil || *p != (upgrade.PlanResult{Mode: "Shared", SchemaFrom: 5, SchemaTo: 6, Reason: "expand only"}) {
		t.Errorf("plan %+v", p)
	}
	p = parsePlan("panic: dial tcp: connection refused " + strings.Repeat("x", 400))
	if p == nil || p.Mode != "" || !strings.Contains(p.Reason, "connection refused") || len(p.Reason) > 400 {
		t.Errorf("unreadable plan %+v", p)
	}
}

// TestWithUpgrade: during and after an upgrade its Progressing and Degraded replace
// the pass's; Ready stays the pass's.
func TestWithUpgrade(t *testing.T) {
	pass := []metav1.Condition{condition(oauthv1alpha1.ConditionReady, true, ReasonAvailable, ""),
		condition(oauthv1alpha1.ConditionProgressing, false, ReasonAvailable, ""),
		condition(oauthv1alpha1.ConditionDegraded, false, ReasonAvailable, "")}
	up := []metav1.Condition{condition(oauthv1alpha1.ConditionProgressing, true, "UpgradePromoting", "step 1 of 2"),
		condition(oauthv1alpha1.ConditionDegraded, false, "UpgradePromoting", "")}
	checkConditions(t, withUpgrade(pass, up), map[string]want{
		oauthv1alpha1.ConditionReady:       {yes, ReasonAvailable},
		oauthv1alpha1.ConditionProgressing: {yes, "UpgradePromoting"},
		oauthv1alpha1.ConditionDegraded:    {no, "UpgradePromoting"},
	}, "")
}

// TestScrape sums kubeoauth_http_requests_total and its 5xx codes, as the token
// server exposes them; a server without the counter is unreadable, not zero,
// unless it is a token server (its build info) that served nothing yet. The last
// line is in the form of a token server before 0.2.0 (label "endpoint"), the
// old colour of an upgrade from it.
func TestScrape(t *testing.T) {
	body := "# TYPE kubeoauth_http_requests_total counter\n" +
		`kubeoauth_http_requests_total{code="200",handler="token"} 90` + "\n" +
		`kubeoauth_http_requests_total{code="401",handler="token"} 4` + "\n" +
		`kubeoauth_http_requests_total{code="500",handler="token"} 5` + "\n" +
		`kubeoauth_http_requests_total{code="503",endpoint="introspect"} 1` + "\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/idle/metrics" {
			_, _ = w.Write([]byte("# TYPE kubeoauth_build_info gauge\nkubeoauth_build_info{version=\"v2\"} 1\n"))
			return
		}
		if r.URL.Path == "/empty/metrics" {
			_, _ = w.Write([]byte("# TYPE go_goroutines gauge\ngo_goroutines 3\n"))
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	m, err := scrape(context.Background(), srv.URL+"/metrics")
	if want := (upgrade.Metrics{"token": {Requests: 95, Errors: 5}, "introspect": {Requests: 1, Errors: 1}}); err != nil || !maps.Equal(m, want) {
		t.Errorf("scrape: %+v, %v; want %+v: per endpoint, 4xx left out", m, err, want)
	}
	if _, err := scrape(context.Background(), srv.URL+"/empty/metrics"); err == nil {
		t.Error("a server without kubeoauth_http_requests_total must be unreadable")
	}
	// A token server that has served nothing yet (a green pod before its step) has
	// no series of the counter, only its build info: zero requests.
	if m, err := scrape(context.Background(), srv.URL+"/idle/metrics"); err != nil || len(m) != 0 {
		t.Errorf("an idle token server: %+v, %v; want zero requests", m, err)
	}
	addr := strings.TrimPrefix(srv.URL, "http://")
	pods := []upgrade.Pod{{Name: "auth-green-0", Color: upgrade.Green}, {Name: "auth-green-1", Color: upgrade.Green},
		{Name: "auth-blue-0", Color: upgrade.Blue}}
	if got, want := scrapeColor(context.Background(), pods, map[string]string{"auth-green-0": addr, "auth-green-1": addr}, upgrade.Green),
		(upgrade.Metrics{"token": {Requests: 190, Errors: 10}, "introspect": {Requests: 2, Errors: 2}}); !maps.Equal(got, want) {
		t.Errorf("green summed %+v, want %+v", got, want)
	}
	if got := scrapeColor(context.Background(), pods, map[string]string{"auth-green-0": addr}, upgrade.Green); got != nil {
		t.Errorf("a green pod without an address must make the metrics unreadable, got %+v", got)
	}
}

// TestHeldStatefulSets: while traffic moves, a StatefulSet whose image and replicas
// stay is not applied, so a config change does not roll both colors at once
// (review finding 9); once the hold ends, everything is applied.
func TestHeldStatefulSets(t *testing.T) {
	blue3, green3 := upgrade.StatefulSetIntent{Color: upgrade.Blue, Image: "v1", Replicas: 3}, upgrade.StatefulSetIntent{Color: upgrade.Green, Image: "v2", Replicas: 3}
	green0 := upgrade.StatefulSetIntent{Color: upgrade.Green, Image: "v2", Replicas: 0}
	both := map[upgrade.Color]upgrade.StatefulSet{upgrade.Blue: {Image: "v1", Replicas: 3}, upgrade.Green: {Image: "v2", Replicas: 3}}
	tests := map[string]struct {
		want     []upgrade.StatefulSetIntent
		observed map[upgrade.Color]upgrade.StatefulSet
		hold     bool
		apply    []upgrade.StatefulSetIntent
	}{
		"promoting: both unchanged: neither applied": {[]upgrade.StatefulSetIntent{blue3, green3}, both, true, nil},
		"deploying: green is new: applied":           {[]upgrade.StatefulSetIntent{blue3, green3}, map[upgrade.Color]upgrade.StatefulSet{upgrade.Blue: {Image: "v1", Replicas: 3}}, true, []upgrade.StatefulSetIntent{green3}},
		"rolling back: green scaled to zero":         {[]upgrade.StatefulSetIntent{blue3, green0}, both, true, []upgrade.StatefulSetIntent{green0}},
		"no hold: all applied":                       {[]upgrade.StatefulSetIntent{blue3, green3}, both, false, []upgrade.StatefulSetIntent{blue3, green3}},
	}
	for name, tc := range tests {
		if got := heldStatefulSets(tc.want, tc.observed, tc.hold); !slices.Equal(got, tc.apply) {
			t.Errorf("%s: applied %v, want %v", name, got, tc.apply)
		}
	}
}
