package v1alpha1_test

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// TestMetricsAccessValidation: spec.metrics.from takes NetworkPolicy peers, a bounded
// number of them, and only on a bundled server, whose NetworkPolicy the operator
// writes. A peer the API server would refuse in that NetworkPolicy (found by review
// 18: an empty peer, a CIDR that is none, an ipBlock beside a selector, a label value
// that is none) is refused here, at the field: accepted, it would only fail the
// operator's write later, naming a field of an object the user never wrote.
func TestMetricsAccessValidation(t *testing.T) {
	prometheus := v1.MetricsPeer{
		NamespaceSelector: &v1.PeerSelector{MatchLabels: map[string]v1.LabelValue{"kubernetes.io/metadata.name": "monitoring"}},
		PodSelector:       &v1.PeerSelector{MatchLabels: map[string]v1.LabelValue{"app.kubernetes.io/name": "prometheus"}}}
	from := func(peers ...v1.MetricsPeer) func(*v1.TokenServerSpec) {
		return func(s *v1.TokenServerSpec) { s.Metrics = &v1.MetricsAccess{From: peers} }
	}
	pods := func(sel v1.PeerSelector) v1.MetricsPeer { return v1.MetricsPeer{PodSelector: &sel} }
	labels := func(kv ...string) v1.MetricsPeer {
		m := map[string]v1.LabelValue{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = v1.LabelValue(kv[i+1])
		}
		return pods(v1.PeerSelector{MatchLabels: m})
	}
	expr := func(key v1.LabelKey, op metav1.LabelSelectorOperator, values ...v1.LabelValue) v1.MetricsPeer {
		return pods(v1.PeerSelector{MatchExpressions: []v1.PeerSelectorRequirement{{Key: key, Operator: op, Values: values}}})
	}
	block := func(cidr string, except ...string) v1.MetricsPeer {
		return v1.MetricsPeer{IPBlock: &v1.PeerIPBlock{CIDR: cidr, Except: except}}
	}
	const peer0 = "spec.metrics.from[0]"
	const labelValue = "must be a label value"
	tests := map[string]struct {
		spec func(*v1.TokenServerSpec)
		want rejected
	}{
		"Prometheus's pods":         {from(prometheus), ok()},
		"every pod ({})":            {from(pods(v1.PeerSelector{})), ok()},
		"an address block":          {from(block("10.0.0.0/8")), ok()},
		"a block with an exception": {from(block("10.0.0.0/8", "10.1.0.0/16"), block("2001:db8::/32", "2001:db8:1::/48")), ok()},
		"expressions": {from(expr("app.kubernetes.io/name", metav1.LabelSelectorOpIn, "prometheus", "vmagent"),
			expr("team", metav1.LabelSelectorOpExists)), ok()},
		"an empty label value": {from(labels("monitoring", "")), ok()},
		"17 peers": {func(s *v1.TokenServerSpec) {
			s.Metrics = &v1.MetricsAccess{}
			for range 17 {
				s.Metrics.From = append(s.Metrics.From, prometheus)
			}
		}, reject("spec.metrics.from", "must have at most 16 items")},
		"metrics on an external server": {func(s *v1.TokenServerSpec) {
			s.Image, s.Database = "", nil
			s.External = &v1.ExternalTokenServer{AdminURL: "https://auth-admin.internal:4445",
				TokenSecretRef: v1.SecretKeyReference{Name: "auth-admin"}}
			s.Metrics = &v1.MetricsAccess{From: []v1.MetricsPeer{prometheus}}
		}, reject("spec.metrics", "metrics is for bundled token servers")},
		"an empty peer": {from(v1.MetricsPeer{}), reject(peer0, "must name podSelector, namespaceSelector or ipBlock")},
		"an ipBlock and a selector": {from(v1.MetricsPeer{IPBlock: &v1.PeerIPBlock{CIDR: "10.0.0.0/8"}, PodSelector: &v1.PeerSelector{}}),
			reject(peer0, "ipBlock may not be combined with podSelector or namespaceSelector")},
		"a CIDR that is none":    {from(block("banana")), reject(peer0+".ipBlock.cidr", "must be a CIDR")},
		"an address, not a CIDR": {from(block("10.0.0.1")), reject(peer0+".ipBlock.cidr", "must be a CIDR")},
		"an exception outside the block": {from(block("10.0.0.0/16", "192.168.0.0/24")),
			reject(peer0+".ipBlock.except", "each entry must be a range strictly inside cidr")},
		"an exception equal to the block": {from(block("10.0.0.0/16", "10.0.0.0/16")),
			reject(peer0+".ipBlock.except", "each entry must be a range strictly inside cidr")},
		"an exception that is none": {from(block("10.0.0.0/16", "x")), reject(peer0+".ipBlock.except[0]", "must be a CIDR")},
		"a label value with spaces": {from(labels("name", "not a label value!")), reject(peer0+".podSelector.matchLabels[name]", labelValue)},
		"a label value of 64":       {from(labels("name", strings.Repeat("a", 64))), reject(peer0+".podSelector.matchLabels.name", "may not be more than 63 bytes")},
		"a label key with a space": {from(labels("my app", "x")),
			reject(peer0+".podSelector.matchLabels", "each key must be a label key")},
		"a label key's name of 64": {from(labels("example.com/"+strings.Repeat("a", 64), "x")),
			reject(peer0+".podSelector.matchLabels", "each key must be a label key")},
		"a label key's prefix of 254": {from(labels(strings.Repeat("a", 254)+"/app", "x")),
			reject(peer0+".podSelector.matchLabels", "each key must be a label key")},
		"17 labels": {func(s *v1.TokenServerSpec) {
			kv := make([]string, 0, 34)
			for i := range 17 {
				kv = append(kv, "l"+strings.Repeat("x", i), "v")
			}
			from(labels(kv...))(s)
		}, reject(peer0+".podSelector.matchLabels", "must have at most 16 items")},
		"In without values": {from(expr("team", metav1.LabelSelectorOpIn)),
			reject(peer0+".podSelector.matchExpressions[0]", "values must be set for In and NotIn")},
		"Exists with values": {from(expr("team", metav1.LabelSelectorOpExists, "a")),
			reject(peer0+".podSelector.matchExpressions[0]", "empty for Exists and DoesNotExist")},
		"an unknown operator": {from(expr("team", "Equals", "a")),
			reject(peer0+".podSelector.matchExpressions[0].operator", "Unsupported value")},
		"an expression's bad key": {from(expr("-team", metav1.LabelSelectorOpExists)),
			reject(peer0+".podSelector.matchExpressions[0].key", "must be a label key")},
		"an expression's bad value": {from(expr("team", metav1.LabelSelectorOpIn, "a b")),
			reject(peer0+".podSelector.matchExpressions[0].values[0]", labelValue)},
		"a namespace selector's bad value": {from(v1.MetricsPeer{NamespaceSelector: &v1.PeerSelector{
			MatchLabels: map[string]v1.LabelValue{"name": "-x"}}}), reject(peer0+".namespaceSelector.matchLabels[name]", labelValue)},
	}
	for name, tt := range tests {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			create(t, tokenServer(tt.spec), tt.want)
		})
	}
}
