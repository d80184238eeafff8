package tokenserver_test

import (
	"bytes"
	"context"
	"net/url"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// A client stored by an earlier version (an unkeyed SHA-256 of its secret) still gets
// tokens after the upgrade, and the operator's next PUT of the same secret stores a
// keyed hash in its place; the database never holds the unkeyed one again.
func TestLegacySecretHashStillWorksAndIsRewritten(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	in := start(t, setup{dsn: dsn})
	secret := confidentialClient(t, in, "grafana")
	st, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	stored := func() []byte {
		t.Helper()
		var hash []byte
		if err := st.DB().QueryRowContext(ctx, `SELECT secret_hash FROM clients WHERE id = 'grafana'`).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		return hash
	}
	if h := stored(); bytes.Equal(h, store.LegacyHashSecret(secret)) || !bytes.HasPrefix(h, []byte("hmac-sha256:")) {
		t.Fatalf("a new client's secret is stored as %x; want a keyed hash", h)
	}
	// What an earlier version wrote.
	c, err := st.GetClientByID(ctx, "grafana")
	if err != nil {
		t.Fatal(err)
	}
	legacy := *c
	legacy.SecretHash = store.LegacyHashSecret(secret)
	if _, err := st.PutClient(ctx, &legacy); err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	eventually(t, "the legacy hash authenticates the client", func() bool {
		code, _ := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret)
		return code == 200 && bytes.Equal(stored(), store.LegacyHashSecret(secret))
	})
	if code, _ := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret+"-wrong"); code != 401 {
		t.Errorf("a wrong secret against a legacy hash: %d, want 401", code)
	}
	// The operator puts the client again, as every resync does.
	got, err := in.Admin.GetClient(ctx, "grafana")
	if err != nil {
		t.Fatal(err)
	}
	status, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: got.ID, Secret: secret, OwnerNamespace: got.OwnerNamespace,
		ClientMetadata: got.ClientMetadata})
	if err != nil {
		t.Fatal(err)
	}
	if !status.Changed || !bytes.HasPrefix(stored(), []byte("hmac-sha256:")) {
		t.Errorf("after the operator's PUT: changed %v, stored %x; want the hash rewritten keyed", status.Changed, stored())
	}
	if code, body := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret); code != 200 {
		t.Errorf("after the rewrite: %d %v", code, body)
	}
}
