package tokenserver

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/version"
)

// Metrics are the server's Prometheus metrics, registered on their own registry so
// that two servers in one test process do not collide.
type Metrics struct {
	Registry        *prometheus.Registry
	requests        *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	tokensIssued    *prometheus.CounterVec
	graceUses       prometheus.Counter
	coalesced       prometheus.Counter
	chainRevocation prometheus.Counter
	revocations     *prometheus.CounterVec
	dbErrors        prometheus.Counter
	loginsThrottled prometheus.Counter
	throttleKeys    *prometheus.GaugeVec
	fenceState      *prometheus.GaugeVec
	fenceHeld       prometheus.Gauge
	fenceForwarded  prometheus.Counter
	// The group commit token writes share (postgres.GroupCommitHooks).
	commitBatches   *prometheus.CounterVec
	commitBatchSize prometheus.Histogram
	commitQueueWait prometheus.Histogram
	commitAlone     prometheus.Counter
}

// NewMetrics creates and registers the metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		// "handler", not "endpoint": the Prometheus Operator labels every target
		// with endpoint=<port>, which would rename ours to exported_endpoint and
		// leave the chart's alerts matching nothing. No label here may be one a
		// scraper sets itself (namespace, pod, container, service, endpoint, job,
		// instance); TestMetricLabelsSurviveScrapers checks.
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeoauth_http_requests_total", Help: "HTTP requests by handler and status code.",
		}, []string{"handler", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kubeoauth_http_request_duration_seconds", Help: "HTTP request latency by handler.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"handler"}),
		tokensIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeoauth_tokens_issued_total", Help: "Token responses by grant type.",
		}, []string{"grant_type"}),
		graceUses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeoauth_refresh_grace_uses_total", Help: "Rotated refresh tokens accepted within the grace period.",
		}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeoauth_refresh_coalesced_total", Help: "Refresh requests answered with a concurrent identical request's response.",
		}),
		chainRevocation: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeoauth_refresh_chain_revocations_total",
			Help: "Token chains revoked because a refresh token was reused after its grace period.",
		}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeoauth_revocations_total", Help: "Revocations by kind: token (a token chain), grant, client.",
		}, []string{"kind"}),
		dbErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeoauth_database_errors_total", Help: "Database calls that failed because the database was unreachable.",
		}),
		loginsThrottled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeoauth_logins_throttled_total", Help: "Sign-ins refused because of too many failures for the username or address.",
		}),
		throttleKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeoauth_login_throttle_keys",
			Help: "Usernames and addresses the sign-in throttle remembers (each map is bounded).",
		}, []string{"kind"}),
		fenceState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeoauth_fence_state",
			Help: "1 for what the upgrade fence makes this server do: none, holding (write requests held), cut_over (held, " +
				"past the point of no return), forwarding (requests sent to the upgraded servers).",
		}, []string{"state"}),
		fenceHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeoauth_fence_held_requests", Help: "Requests held, unanswered, by an upgrade's fence now.",
		}),
		fenceForwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeoauth_fence_forwarded_total", Help: "Requests forwarded to the upgraded servers after a cutover.",
		}),
		commitBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeoauth_group_commit_batches_total",
			Help: "Batches of token writes committed together, by outcome: committed; failed (every request got the batch's " +
				"error); lock_timeout (waited on another transaction's row lock, its requests then written alone); " +
				"retried (failed otherwise, its requests then written alone).",
		}, []string{"outcome"}),
		commitBatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kubeoauth_group_commit_batch_size", Help: "Requests per batch of token writes.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
		commitQueueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kubeoauth_group_commit_queue_wait_seconds",
			Help:    "How long a request's token writes waited for a batch writer.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		commitAlone: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeoauth_group_commit_retried_requests_total",
			Help: "Requests whose token writes were written alone after their batch failed or waited on a row lock.",
		}),
	}
	for _, outcome := range []string{postgres.BatchCommitted, postgres.BatchFailed, postgres.BatchLockTimeout, postgres.BatchRetried} {
		m.commitBatches.WithLabelValues(outcome)
	}
	m.fenceState.WithLabelValues("none").Set(1)
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kubeoauth_build_info", Help: "Always 1; the version label is the token server's build.",
	}, []string{"version"})
	buildInfo.WithLabelValues(version.Version).Set(1)
	m.Registry.MustRegister(buildInfo, m.requests, m.latency, m.tokensIssued, m.graceUses, m.coalesced, m.chainRevocation,
		m.revocations, m.dbErrors, m.loginsThrottled, m.throttleKeys, m.fenceState, m.fenceHeld, m.fenceForwarded,
		m.commitBatches, m.commitBatchSize, m.commitQueueWait, m.commitAlone,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// countEvent counts revocations from the store's event log.
func (m *Metrics) countEvent(kind store.EventKind) {
	switch kind {
	case store.EventTokenRevoked:
		m.revocations.WithLabelValues("token").Inc()
	case store.EventGrantRevoked:
		m.revocations.WithLabelValues("grant").Inc()
	case store.EventClientDeleted:
		m.revocations.WithLabelValues("client").Inc()
	}
}

// groupCommitHooks count the store's group commit.
func (m *Metrics) groupCommitHooks() postgres.GroupCommitHooks {
	return postgres.GroupCommitHooks{
		Batch: func(size int, outcome string) {
			m.commitBatches.WithLabelValues(outcome).Inc()
			m.commitBatchSize.Observe(float64(size))
			if outcome == postgres.BatchLockTimeout || outcome == postgres.BatchRetried {
				m.commitAlone.Add(float64(size))
			}
		},
		QueueWait: func(d time.Duration) { m.commitQueueWait.Observe(d.Seconds()) },
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// instrument counts and times requests to one handler. Health, readiness and
// metrics are not instrumented: an upgrade's analysis reads these counters as the
// traffic a new version served, and probes would pass for traffic.
func (m *Metrics) instrument(handler string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h(rec, r)
		m.latency.WithLabelValues(handler).Observe(time.Since(start).Seconds())
		m.requests.WithLabelValues(handler, strconv.Itoa(rec.code)).Inc()
	}
}
