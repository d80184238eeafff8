package postgres_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// Rows written before the store had its own client type (when clients.spec was the
// admin API's ClientMetadata marshalled as it was) read back whole, and putting the
// same client again changes nothing: the document the store writes is the one those
// rows hold, so an upgrade needs no migration and a resync after it writes nothing.
func TestStoredClientFormat(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	tests := map[string]struct {
		spec string // as the old code wrote it
		want store.ClientSpec
	}{
		"every field": {
			spec: `{"name":"Grafana","ownerTeam":"obs","ownerContact":"obs@example.com",` +
				`"logoURI":"https://g.example.com/logo.png","clientURI":"https://g.example.com",` +
				`"policyURI":"https://g.example.com/policy","tosURI":"https://g.example.com/tos",` +
				`"grantTypes":["authorization_code","refresh_token"],"responseTypes":["code"],` +
				`"redirectURIs":["https://g.example.com/cb"],"postLogoutRedirectURIs":["https://g.example.com/bye"],` +
				`"scopes":["openid","email"],"audience":["https://api.example.com"],` +
				`"tokenEndpointAuthMethod":"private_key_jwt","jwks":{"keys":[]},"skipConsent":true,` +
				`"tokenLifespans":{"accessToken":"5m"}}`,
			want: store.ClientSpec{Name: "Grafana", OwnerTeam: "obs", OwnerContact: "obs@example.com",
				LogoURI: "https://g.example.com/logo.png", ClientURI: "https://g.example.com",
				PolicyURI: "https://g.example.com/policy", TOSURI: "https://g.example.com/tos",
				GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
				RedirectURIs: []string{"https://g.example.com/cb"}, PostLogoutRedirectURIs: []string{"https://g.example.com/bye"},
				Scopes: []string{"openid", "email"}, Audience: []string{"https://api.example.com"},
				TokenEndpointAuthMethod: "private_key_jwt", JWKS: json.RawMessage(`{"keys": []}`), SkipConsent: true,
				TokenLifespans: map[string]string{"accessToken": "5m"}},
		},
		"empty fields left out": {
			spec: `{"name":"Robot","grantTypes":["client_credentials"],"tokenEndpointAuthMethod":"client_secret_basic"}`,
			want: store.ClientSpec{Name: "Robot", GrantTypes: []string{"client_credentials"},
				TokenEndpointAuthMethod: "client_secret_basic"},
		},
		"no grant types": {
			spec: `{"name":"Bare","grantTypes":null,"tokenEndpointAuthMethod":"none"}`,
			want: store.ClientSpec{Name: "Bare", TokenEndpointAuthMethod: "none"},
		},
	}
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			id := "old-" + tt.want.Name
			if _, err := db.ExecContext(ctx, `INSERT INTO clients (id, secret_hash, owner_namespace, spec)
VALUES ($1, $2, 'apps', $3)`, id, []byte("hash"), tt.spec); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetClientByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			want := store.Client{ID: id, SecretHash: []byte("hash"), OwnerNamespace: "apps", ClientSpec: tt.want,
				CreatedAt: got.CreatedAt, UpdatedAt: got.UpdatedAt}
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("read back\n %+v\nwant\n %+v", *got, want)
			}
			if changed, err := s.PutClient(ctx, got); err != nil || changed {
				t.Errorf("PutClient(the client as read) = %v, %v; want unchanged: the store writes another document", changed, err)
			}
		})
	}
}
