package main

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// conditionsCollector exports every TokenServer's conditions, as kube-state-metrics
// does a Deployment's, so that alerts can see an upgrade stuck or rolled back and a
// server stalled: the conditions say so, and without this only events and kubectl
// would. TokenServers only: they are few, where OAuthClients may be ten thousand
// (their failures show in controller_runtime_reconcile_errors_total).
type conditionsCollector struct {
	reader client.Reader
	desc   *prometheus.Desc
	since  *prometheus.Desc
}

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
	labels := []string{"namespace", "name", "type", "status", "reason"}
	registered = &conditionsCollector{reader: reader,
		desc: prometheus.NewDesc("kubeoauth_tokenserver_condition",
			"1 for each condition of each TokenServer, with its status and reason.", labels, nil),
		since: prometheus.NewDesc("kubeoauth_tokenserver_condition_last_transition_seconds",
			"When each condition of each TokenServer last changed status (Unix seconds).", labels, nil),
	}
	return metrics.Registry.Register(registered)
}

func (c *conditionsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.since
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
}
