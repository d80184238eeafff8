package adminapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// A list is read page by page, following the server's Link rel="next" even when a
// proxy put a Link line of its own before it (a list that stopped at its first
// page would read as "these are all": the consent mirror would then drop every
// grant it did not see); a link that does not go on with the list is an error.
func TestListAllFollowsTheNextLink(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Link", `<https://cdn.example.com/app.css>; rel="preload"`)
		switch r.URL.Query().Get("continue") {
		case "":
			w.Header().Add("Link", `</admin/clients?continue=b&limit=500>; rel="next"`)
			_, _ = w.Write([]byte(`[{"id":"a"},{"id":"b"}]`))
		case "b":
			_, _ = w.Write([]byte(`[{"id":"c"}]`))
		default:
			w.Header().Add("Link", `</elsewhere?continue=x>; rel="next"`)
			_, _ = w.Write([]byte(`[]`))
		}
	}))
	defer srv.Close()
	c := &HTTPClient{BaseURL: srv.URL, Token: "t", HTTP: srv.Client()}
	got, err := c.ListClients(context.Background())
	ids := make([]string, 0, len(got))
	for _, x := range got {
		ids = append(ids, x.ID)
	}
	if err != nil || strings.Join(ids, ",") != "a,b,c" {
		t.Errorf("ListClients = %v, %v; want a, b, c from two pages", ids, err)
	}
	q := url.Values{"continue": {"z"}}
	if _, err := listAll[ClientStatus](context.Background(), c, "/admin/clients", q); err == nil {
		t.Error("a next link that leaves the list was followed")
	}
}
