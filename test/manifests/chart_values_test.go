package manifests

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// prometheusRule.tokenLatencyP99Seconds at or above the latency histogram's highest
// finite bucket is refused, naming it: histogram_quantile never returns more than
// that bucket's bound, so KubeoauthTokenLatencyHigh could never fire. A threshold just
// under it is accepted, in both forms helm --set gives it.
func TestChartRefusesUnreachableLatencyThreshold(t *testing.T) {
	m := regexp.MustCompile(`Name: "kubeoauth_http_request_duration_seconds"[^}]*Buckets: \[\]float64\{([^}]*)\}`).
		FindStringSubmatch(readRepo(t, "internal/tokenserver/metrics.go"))
	if m == nil {
		t.Fatal("no buckets of kubeoauth_http_request_duration_seconds in internal/tokenserver/metrics.go")
	}
	buckets := strings.Split(m[1], ",")
	top, err := strconv.ParseFloat(strings.TrimSpace(buckets[len(buckets)-1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	render := func(flag, value string) (string, error) {
		out, err := exec.Command(helmBin(t), "template", "kubeoauth", chartDir(), "--set", "prometheusRule.enabled=true", // #nosec G204 -- the pinned helm
			flag, "prometheusRule.tokenLatencyP99Seconds="+value).CombinedOutput()
		return string(out), err
	}
	for _, v := range []float64{top, top + 0.5, 10} {
		value := strconv.FormatFloat(v, 'f', -1, 64)
		for _, flag := range []string{"--set", "--set-json"} {
			if out, err := render(flag, value); err == nil || !strings.Contains(out, "tokenLatencyP99Seconds") {
				t.Errorf("%s tokenLatencyP99Seconds=%s, not under the top bucket %g: %v, want a schema error naming it", flag, value, top, err)
			}
		}
	}
	for _, value := range []string{"0.25", strconv.FormatFloat(top-0.1, 'f', -1, 64), "1", ".5"} {
		for _, flag := range []string{"--set", "--set-json"} {
			if flag == "--set-json" && strings.HasPrefix(value, ".") {
				continue // not JSON
			}
			if out, err := render(flag, value); err != nil {
				t.Errorf("%s tokenLatencyP99Seconds=%s: %v\n%s", flag, value, err, out)
			}
		}
	}
}
