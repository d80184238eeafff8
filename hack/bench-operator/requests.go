package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"k8s.io/client-go/rest"
)

// requestCounts is the kube-apiserver's own count of the requests it served
// (apiserver_request_total), summed by "VERB resource[/subresource]": what the API
// server did, whoever asked, not what a client believes it sent.
type requestCounts map[string]float64

// scrapeRequests reads apiserver_request_total from the API server's /metrics.
func scrapeRequests(cfg *rest.Config) (requestCounts, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Get(strings.TrimSuffix(cfg.Host, "/") + "/metrics")
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
	}
	out := requestCounts{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		sample, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			continue
		}
		labelPart, value, ok := strings.Cut(sample, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(labelPart, ",") {
			if k, val, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(val, `"`)
			}
		}
		key := labels["verb"] + " " + labels["resource"]
		if s := labels["subresource"]; s != "" {
			key += "/" + s
		}
		out[key] += v
	}
	return out, sc.Err()
}

// printPerClient prints what the API server served between before and after, per
// OAuthClient: writes first, then reads (watches excluded: long-running).
func printPerClient(before, after requestCounts, clients int) {
	writes := map[string]bool{"POST": true, "PUT": true, "PATCH": true, "DELETE": true, "APPLY": true, "DELETECOLLECTION": true}
	reads := map[string]bool{"GET": true, "LIST": true}
	var keys []string
	for k := range after {
		if after[k]-before[k] > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, group := range []struct {
		name  string
		verbs map[string]bool
	}{{"writes", writes}, {"reads", reads}} {
		total := 0.0
		var parts []string
		for _, k := range keys {
			verb, _, _ := strings.Cut(k, " ")
			if !group.verbs[verb] {
				continue
			}
			d := after[k] - before[k]
			total += d
			parts = append(parts, fmt.Sprintf("  %-40s %8.0f  %5.2f per client", k, d, d/float64(clients)))
		}
		fmt.Printf("API server %s until all Ready: %.0f, %.2f per client\n", group.name, total, total/float64(clients))
		for _, p := range parts {
			fmt.Println(p)
		}
	}
}
