package issuedat_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres/issuedat"
	"github.com/kubeoauth/kubeoauth/internal/store/storetest"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

var pg *testpg.Server

// This test binary is the v4test build's store: the migration registered after the
// embedded ones, the store reading and writing issued_at.
func TestMain(m *testing.M) {
	issuedat.Register()
	testpg.Main(m, &pg)
}

// The property every breaking migration must have (as TestBreakingMigrationTransformsRows
// in the store), over 1000 generated tokens rows read as the replay reads them, every
// column as its text form: migrating the database gives the rows Forward makes of
// them, and Backward undoes Forward. migrate up --expand-only leaves it alone.
func TestMigrationTransformsTokenRows(t *testing.T) {
	ctx := t.Context()
	ms := postgres.Migrations()
	last := ms[len(ms)-1]
	if last.Name != issuedat.Name || last.Kind != postgres.Breaking || len(last.Transforms) != 1 {
		t.Fatalf("the last migration is %04d_%s (%s, %d transforms); want %s, breaking, with its transform",
			last.Version, last.Name, last.Kind, len(last.Transforms), issuedat.Name)
	}
	db, err := postgres.OpenDB(pg.NewDatabase(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{To: last.Version - 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := db.ExecContext(ctx, `INSERT INTO clients (id, spec) VALUES ($1, '{}')`, fmt.Sprintf("client-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(14, 8))
	for i := range 1000 {
		insertToken(t, db, rng, i)
	}
	before := textRows(t, db, "tokens")
	if len(before) != 1000 {
		t.Fatalf("%d rows read back, 1000 written", len(before))
	}
	if ran, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{ExpandOnly: true}); err != nil || len(ran) != 0 {
		t.Fatalf("migrate --expand-only ran %v (%v); a breaking migration must wait for a copy", ran, err)
	}
	if ran, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{}); err != nil || len(ran) != 1 || ran[0].Name != issuedat.Name {
		t.Fatalf("migrate up ran %v (%v); want %s", ran, err, issuedat.Name)
	}
	after := textRows(t, db, "tokens")
	if len(after) != len(before) {
		t.Fatalf("%d rows after the migration, %d before", len(after), len(before))
	}
	tr := last.Transforms[0]
	for key, r := range before {
		fwd, err := tr.Forward(r)
		if err != nil {
			t.Fatalf("Forward(%v): %v", r, err)
		}
		if !reflect.DeepEqual(fwd, after[key]) {
			t.Errorf("row %s: the migration made %#v, Forward makes %#v", key, after[key], fwd)
		}
		back, err := tr.Backward(fwd)
		if err != nil {
			t.Fatalf("Backward(%v): %v", fwd, err)
		}
		if !reflect.DeepEqual(back, r) {
			t.Errorf("row %s: Backward(Forward(%#v)) = %#v", key, r, back)
		}
	}

	// A row of the wrong shape, or a value that is not text, is an error naming the
	// column, never a row written without it.
	for name, tt := range map[string]struct {
		f    func(postgres.Row) (postgres.Row, error)
		row  postgres.Row
		want string
	}{
		"Forward of a new row":         {tr.Forward, postgres.Row{"kind": "access_token", "issued_at": "2026-01-01"}, "no column requested_at"},
		"Backward of an old row":       {tr.Backward, postgres.Row{"kind": "access_token", "requested_at": "2026-01-01"}, "no column issued_at"},
		"Forward of a row with both":   {tr.Forward, postgres.Row{"requested_at": "x", "issued_at": "y"}, "both requested_at and issued_at"},
		"Forward of a time.Time value": {tr.Forward, postgres.Row{"requested_at": time.Now()}, "requested_at is time.Time, want its text form"},
	} {
		if _, err := tt.f(tt.row); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v; want an error saying %q", name, err, tt.want)
		}
	}
}

// insertToken writes generated token i: every kind, NULLs where the schema allows
// them, timestamps across zones and centuries, arrays and JSON with the characters
// that text forms quote (commas, quotes, braces, backslashes, spaces, "NULL").
func insertToken(t *testing.T, db *sql.DB, rng *rand.Rand, i int) {
	t.Helper()
	const alphabet = `ab,"{}\ é日NULL'`
	runes := []rune(alphabet)
	word := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteRune(runes[rng.IntN(len(runes))])
		}
		return b.String()
	}
	words := func() []string {
		out := make([]string, rng.IntN(4))
		for j := range out {
			out[j] = word(rng.IntN(8))
		}
		return out
	}
	ts := func() time.Time {
		zone := time.FixedZone("", (rng.IntN(27)-12)*3600+rng.IntN(2)*1800)
		return time.Date(1900+rng.IntN(300), time.Month(1+rng.IntN(12)), 1+rng.IntN(28),
			rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1e6)*1e3, zone)
	}
	maybe := func(v any) any {
		if rng.IntN(3) == 0 {
			return nil
		}
		return v
	}
	kinds := []string{"authorize_code", "access_token", "refresh_token", "pkce", "oidc"}
	form, session := fmt.Sprintf(`{"scope": [%q], "n": %d}`, word(5), rng.IntN(1000)),
		fmt.Sprintf(`{"subject": %q, "extra": {"k": %q}, "at": %q}`, word(6), word(4), ts().Format(time.RFC3339Nano))
	_, err := db.ExecContext(t.Context(), `INSERT INTO tokens (kind, signature, request_id, client_id, subject, grant_id,
    active, rotated_at, access_signature, requested_at, expires_at, requested_scopes, granted_scopes, requested_audience,
    granted_audience, form, session) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		kinds[rng.IntN(len(kinds))], fmt.Sprintf("sig-%04d-%s", i, word(6)), word(10), fmt.Sprintf("client-%d", rng.IntN(3)),
		word(rng.IntN(6)), maybe(word(8)), rng.IntN(2) == 0, maybe(ts()), maybe(word(8)), ts(), maybe(ts()),
		pq.Array(words()), pq.Array(words()), pq.Array(words()), pq.Array(words()), form, session)
	if err != nil {
		t.Fatal(err)
	}
}

// textRows reads every row of table as the replay does (postgres.TableRows), keyed
// by kind and signature, the tokens primary key.
func textRows(t *testing.T, db *sql.DB, table string) map[string]postgres.Row {
	t.Helper()
	rows, err := postgres.TableRows(t.Context(), db, table)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]postgres.Row, len(rows))
	for _, r := range rows {
		out[fmt.Sprint(r["kind"], " ", r["signature"])] = r
	}
	return out
}

// The store of the v4test build passes the whole conformance suite on the schema
// after the migration, which has no requested_at any more: it reads and writes
// issued_at.
func TestStoreServesOnTheNewSchema(t *testing.T) {
	dsn := pg.NewMigratedDatabase(t)
	db, err := postgres.OpenDB(dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	var cols string
	if err := db.QueryRowContext(context.Background(), `SELECT string_agg(column_name, ',' ORDER BY column_name)
FROM information_schema.columns WHERE table_name = 'tokens' AND column_name IN ('requested_at', 'issued_at')`).Scan(&cols); err != nil {
		t.Fatal(err)
	}
	if cols != "issued_at" {
		t.Fatalf("tokens has %q of requested_at and issued_at; want issued_at only", cols)
	}
	storetest.Run(t, func(t *testing.T, cfg storetest.Config) oauth.Storage {
		s, err := postgres.Open(t.Context(), pg.NewMigratedDatabase(t), postgres.Options{
			RefreshGracePeriod: cfg.RefreshGracePeriod, Now: cfg.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
