package tokenserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// TestAdminListsComeInPages: the operator reads at most 8 MiB of an answer, and a
// client may hold a couple of hundred kilobytes of redirect URIs, which any tenant
// may register. A whole list of those outgrew one answer: the owner sweep and the
// consent mirror, which list every client and grant, failed on every pass for
// every tenant. Lists now come in pages that each fit, and the admin client reads
// them all, in order, each once.
func TestAdminListsComeInPages(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	// 40 clients of about 240 KiB each: 9.6 MiB in all.
	uris := make([]string, 30)
	for i := range uris {
		uris[i] = fmt.Sprintf("https://app.example.com/callback/%d/%s", i, strings.Repeat("p", 8000))
	}
	want := make([]string, 0, 1240)
	for i := range 40 {
		id := fmt.Sprintf("big-%02d", i)
		want = append(want, id)
		if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: id, Secret: strings.Repeat("s", 40), OwnerNamespace: "tenant-a",
			ClientMetadata: adminapi.ClientMetadata{Name: "Big", GrantTypes: []string{"authorization_code"}, ResponseTypes: []string{"code"},
				RedirectURIs: uris, Scopes: []string{"openid"}, TokenEndpointAuthMethod: "client_secret_basic"}}); err != nil {
			t.Fatal(err)
		}
	}
	// And more small ones than one page holds.
	for i := range 1200 {
		id := fmt.Sprintf("small-%04d", i)
		want = append(want, id)
		if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: id, Secret: strings.Repeat("s", 40), OwnerNamespace: "tenant-b",
			ClientMetadata: adminapi.ClientMetadata{Name: "Small", GrantTypes: []string{"client_credentials"},
				Scopes: []string{"zones.read"}, TokenEndpointAuthMethod: "client_secret_basic"}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := in.Admin.ListClients(ctx)
	if err != nil {
		t.Fatalf("listing 1,240 clients, 40 of them large: %v", err)
	}
	ids := make([]string, len(got))
	for i, c := range got {
		ids[i] = c.ID
	}
	if !slices.Equal(ids, want) {
		t.Errorf("listed %d clients; want the %d registered, each once, by ID", len(ids), len(want))
	}

	// What the server answers: pages that fit, linked to the next.
	page := func(query string) (int, string, int) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.AdminURL+"/admin/clients?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+in.Admin.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var items []json.RawMessage
		_ = json.NewDecoder(resp.Body).Decode(&items)
		return resp.StatusCode, resp.Header.Get("Link"), len(items)
	}
	if code, link, n := page("limit=40"); code != http.StatusOK || n >= 40 || n == 0 || !strings.Contains(link, `rel="next"`) {
		t.Errorf("a page of 40 large clients: %d, %d items, Link %q; want fewer than 40 (4 MiB at most) and a next link", code, n, link)
	}
	if code, link, n := page("limit=1000&continue=" + "c21hbGwtMTE5OQ"); code != http.StatusOK || n != 0 || link != "" {
		t.Errorf("the page after the last client: %d, %d items, Link %q; want none, and no next link", code, n, link)
	}
	// base64url of "a\x00b" (a grant's key, not a client's) and of "\xff" (no UTF-8).
	for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "continue=c21hbGw", "limit=5&continue=YQBi", "limit=5&continue=_w"} {
		if code, _, _ := page(bad); code != http.StatusUnprocessableEntity {
			t.Errorf("?%s: %d, want 422", bad, code)
		}
	}

	// Grants too: more than a page of them.
	for i := range 1100 {
		if _, err := in.Admin.PutGrant(ctx, &adminapi.Grant{ClientID: "small-0001", Subject: fmt.Sprintf("user-%04d", i),
			Scopes: []string{"zones.read"}}); err != nil {
			t.Fatal(err)
		}
	}
	grants, err := in.Admin.ListGrantsFrom(ctx, adminapi.SourceDeclared)
	if err != nil || len(grants) != 1100 || grants[0].Subject != "user-0000" || grants[1099].Subject != "user-1099" {
		t.Errorf("listed %d declared grants, %v; want the 1,100, by subject", len(grants), err)
	}
}
