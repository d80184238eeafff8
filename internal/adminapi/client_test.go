package adminapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestErrorsDoNotCarryForeignBodies: what a server answers ends up in conditions
// anyone reading the object sees; a server that is not an admin API (an internal
// service an external adminURL points at) must not have its body copied there.
func TestErrorsDoNotCarryForeignBodies(t *testing.T) {
	tests := map[string]struct {
		status  int
		body    string
		want    string
		notWant []string
	}{
		"foreign body": {status: http.StatusForbidden, body: "<html>AWS_SECRET_ACCESS_KEY=abc123</html>",
			want: "403 Forbidden (not an admin API error)", notWant: []string{"AWS_SECRET", "html"}},
		"admin API error": {status: http.StatusUnprocessableEntity, body: `{"error":"must be one of a, b","field":"id"}`,
			want: "422: id: must be one of a, b"},
		"long, with control characters": {status: http.StatusBadRequest,
			body: `{"error":"line1\nline2\u001b[31m` + strings.Repeat("x", 5000) + `"}`,
			want: "line1 line2 [31mxxx", notWant: []string{"\n", "\x1b", strings.Repeat("x", 300)}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			err := (&HTTPClient{BaseURL: srv.URL, Token: "t", HTTP: srv.Client()}).Health(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
			for _, s := range tc.notWant {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains %q", err, s)
				}
			}
		})
	}
}
