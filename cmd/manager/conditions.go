package main

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// conditionsCollector exports every TokenServer's conditions, as kube-state-metrics
// does a Deployment's, so that alerts can see an upgrade stuck or rolled back and a
// server stalled: the conditions say so, and without this only events and kubectl
// would. Of OAuthClients and ConsentGrants, which may be ten thousand, it exports
// how many are Stalled in each namespace, by reason: a failure that needs a person
// (a refused client ID or spec, a namespace not admitted, an invalid Secret) is no
// reconcile error, as retrying cannot mend it, so nothing else would count it.
type conditionsCollector struct {
	reader  client.Reader
	desc    *prometheus.Desc
	since   *prometheus.Desc
	stalled *prometheus.Desc
}

// conditionLabels are the labels of a TokenServer's condition series.
var conditionLabels = []string{"namespace", "name", "type", "status", "reason"}

var (
	registeredMu sync.Mutex
	registered   *conditionsCollector
)

// registerConditions registers the collector of this manager in controller-runtime's
// registry, replacing an earlier manager's: the tests run several in one process.
func registerConditions(reader client.Reader) error {
	registeredMu.Lock()
	defer registeredMu.Unlock()
	if registered != nil {
		metrics.Registry.Unregister(registered)
	}
	registered = &conditionsCollector{reader: reader,
		desc: prometheus.NewDesc("kubeoauth_tokenserver_condition",
			"1 for each condition of each TokenServer, with its status and reason.", conditionLabels, nil),
		since: prometheus.NewDesc("kubeoauth_tokenserver_condition_last_transition_seconds",
			"When each condition of each TokenServer last changed status (Unix seconds).", conditionLabels, nil),
		stalled: prometheus.NewDesc("kubeoauth_stalled_resources",
			"How many OAuthClients or ConsentGrants (kind) of a namespace are Stalled, by the condition's reason.",
			[]string{"kind", "namespace", "reason"}, nil),
	}
	return metrics.Registry.Register(registered)
}

func (c *conditionsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.since
	ch <- c.stalled
}

// Collect reads the manager's cache (the TokenServer controller's informer), not the
// API server: a scrape costs no request.
func (c *conditionsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list oauthv1alpha1.TokenServerList
	if err := c.reader.List(ctx, &list); err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for i := range list.Items {
		ts := &list.Items[i]
		for _, cond := range ts.Status.Conditions {
			values := []string{ts.Namespace, ts.Name, cond.Type, string(cond.Status), cond.Reason}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, values...)
			ch <- prometheus.MustNewConstMetric(c.since, prometheus.GaugeValue, float64(cond.LastTransitionTime.Unix()), values...)
		}
	}
	c.collectStalled(ctx, ch)
}

// collectStalled counts the Stalled OAuthClients and ConsentGrants by kind,
// namespace and reason; a count of none is no series. The cache's objects are
// read without copies: thousands of them at every scrape.
func (c *conditionsCollector) collectStalled(ctx context.Context, ch chan<- prometheus.Metric) {
	counts := map[[3]string]int{}
	count := func(kind, ns string, conds []metav1.Condition) {
		if s := meta.FindStatusCondition(conds, oauthv1alpha1.ConditionStalled); s != nil && s.Status == metav1.ConditionTrue {
			counts[[3]string{kind, ns, s.Reason}]++
		}
	}
	var clients oauthv1alpha1.OAuthClientList
	if err := c.reader.List(ctx, &clients, client.UnsafeDisableDeepCopy); err != nil {
		ch <- prometheus.NewInvalidMetric(c.stalled, err)
		return
	}
	for i := range clients.Items {
		count("OAuthClient", clients.Items[i].Namespace, clients.Items[i].Status.Conditions)
	}
	var grants oauthv1alpha1.ConsentGrantList
	if err := c.reader.List(ctx, &grants, client.UnsafeDisableDeepCopy); err != nil {
		ch <- prometheus.NewInvalidMetric(c.stalled, err)
		return
	}
	for i := range grants.Items {
		count("ConsentGrant", grants.Items[i].Namespace, grants.Items[i].Status.Conditions)
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.stalled, prometheus.GaugeValue, float64(n), k[0], k[1], k[2])
	}
}
