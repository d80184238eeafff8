package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// Every sample a newcomer copies must be accepted by a real API server as it stands.
func TestSamplesApply(t *testing.T) { applySamples(t) }

func applySamples(t *testing.T) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "oauth_*.yaml"))
	if err != nil || len(files) != 3 {
		t.Fatalf("want one sample per kind (3), found %v (%v)", files, err)
	}
	kinds := map[string]bool{}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{}
			if err := yaml.UnmarshalStrict(raw, &u.Object); err != nil {
				t.Fatal(err)
			}
			// Applied as `kubectl apply --server-side` does; server-side apply refuses
			// unknown fields, so a misspelled field in a sample fails here.
			if err := serverSideApply(u); err != nil {
				t.Fatalf("the API server refused %s: %v", f, err)
			}
			kinds[u.GetKind()] = true
		})
	}
	for _, kind := range []string{"TokenServer", "OAuthClient", "ConsentGrant"} {
		if !kinds[kind] {
			t.Errorf("no sample of kind %s was applied", kind)
		}
	}
}

func serverSideApply(u *unstructured.Unstructured) error {
	return k8s.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner("samples-test"), client.ForceOwnership)
}

// The samples test would prove little if apply let a misspelled field through.
func TestServerSideApplyRefusesUnknownFields(t *testing.T) {
	u := rawClient(map[string]any{"redirectURls": []any{"https://typo.example.com/cb"}})
	u.SetGenerateName("")
	u.SetName("typo")
	err := serverSideApply(u)
	if err == nil || !strings.Contains(err.Error(), "redirectURls") {
		t.Fatalf("want the misspelled field redirectURls refused, got: %v", err)
	}
}

// `kubectl get` shows the columns a user looks for; kubectl asks the API server for a
// Table, so this asks the same. Status is the Ready condition's reason
// (WaitingForDatabase, RollingOut, NamespaceNotAllowed, ...), so `kubectl get` says
// why an object is not Ready; shown are the columns without -o wide.
func TestPrinterColumns(t *testing.T) {
	tests := map[string]struct {
		namespace, sample string
		want, shown       []string
	}{
		"oauthclients": {"observability", "grafana", []string{"Name", "Ready", "Status", "Client ID", "Server", "Secret", "Age"},
			[]string{"Name", "Ready", "Status", "Client ID", "Server", "Age"}},
		"consentgrants": {"observability", "grafana-alice", []string{"Name", "Ready", "Status", "Client", "Subject", "Source", "Expires", "Age"},
			[]string{"Name", "Ready", "Status", "Client", "Subject", "Source", "Age"}},
		"tokenservers": {"platform", "auth", []string{"Name", "Ready", "Status", "Issuer", "Serving", "Desired", "Active", "Upgrade", "Step", "Target", "Age"},
			[]string{"Name", "Ready", "Status", "Issuer", "Serving", "Active", "Upgrade", "Age"}},
	}
	applySamples(t) // the tables list the samples
	httpClient, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			url := fmt.Sprintf("%s/apis/oauth.kubeoauth.io/v1alpha1/namespaces/%s/%s",
				strings.TrimSuffix(restCfg.Host, "/"), tc.namespace, name)
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
			req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
			}
			var table metav1.Table
			if err := json.Unmarshal(body, &table); err != nil {
				t.Fatal(err)
			}
			got := make([]string, 0, len(table.ColumnDefinitions))
			var shown []string
			for _, c := range table.ColumnDefinitions {
				got = append(got, c.Name)
				if c.Priority == 0 {
					shown = append(shown, c.Name)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("columns = %v, want %v", got, tc.want)
			}
			if !slices.Equal(shown, tc.shown) {
				t.Errorf("columns without -o wide = %v, want %v", shown, tc.shown)
			}
			if len(table.Rows) != 1 || table.Rows[0].Cells[0] != tc.sample {
				t.Errorf("want one row, for the sample %s; got %v", tc.sample, table.Rows)
			}
		})
	}
}
