package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// people is the sample breaking migration, defined only here: 0002 splits full_name
// into given_name and family_name (at the first space; no space leaves family_name
// NULL, so that every name splits and joins back) and renames age to years. A token
// server after it cannot read a row the old way, nor the old one the new way.
func people() []postgres.Migration {
	return []postgres.Migration{
		{Version: 1, Name: "people", Kind: postgres.Expand, Transaction: true, SQL: `
CREATE TABLE people (id text PRIMARY KEY, full_name text NOT NULL, age integer, note text)`},
		{Version: 2, Name: "split_full_name", Kind: postgres.Breaking, Transaction: true, SQL: `
ALTER TABLE people ADD COLUMN given_name text, ADD COLUMN family_name text;
UPDATE people SET given_name = split_part(full_name, ' ', 1),
    family_name = CASE WHEN strpos(full_name, ' ') > 0 THEN substr(full_name, strpos(full_name, ' ') + 1) END;
ALTER TABLE people ALTER COLUMN given_name SET NOT NULL, DROP COLUMN full_name;
ALTER TABLE people RENAME COLUMN age TO years`,
			Transforms: []postgres.Transform{{Table: "people", Forward: splitName, Backward: joinName}}},
	}
}

func splitName(r postgres.Row) (postgres.Row, error) {
	full, ok := r["full_name"].(string)
	if !ok {
		return nil, fmt.Errorf("full_name is %T, want a string", r["full_name"])
	}
	out := postgres.Row{"id": r["id"], "years": r["age"], "note": r["note"], "family_name": nil}
	given, family, found := strings.Cut(full, " ")
	out["given_name"] = given
	if found {
		out["family_name"] = family
	}
	return out, nil
}

func joinName(r postgres.Row) (postgres.Row, error) {
	given, ok := r["given_name"].(string)
	if !ok {
		return nil, fmt.Errorf("given_name is %T, want a string", r["given_name"])
	}
	full := given
	if family, ok := r["family_name"].(string); ok {
		full += " " + family
	}
	return postgres.Row{"id": r["id"], "full_name": full, "age": r["years"], "note": r["note"]}, nil
}

// A generated person: names of letters (some not ASCII) and spaces anywhere,
// leading, trailing and doubled included, empty ones, NULL ages and notes. Values
// are text forms, as the replay gives a transform.
func randomPerson(rng *rand.Rand, i int) postgres.Row {
	const alphabet = "ab zé日 -'"
	runes := []rune(alphabet)
	word := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteRune(runes[rng.IntN(len(runes))])
		}
		return b.String()
	}
	r := postgres.Row{"id": fmt.Sprintf("p%05d", i), "full_name": word(rng.IntN(12)), "age": nil, "note": nil}
	if rng.IntN(4) > 0 {
		r["age"] = strconv.Itoa(rng.IntN(120))
	}
	if rng.IntN(2) == 0 {
		r["note"] = word(rng.IntN(20))
	}
	return r
}

// The property every breaking migration must have, over many generated rows:
// migrating a copy of the database gives the same rows as applying the forward
// transform row by row (what the replay does to rows written during the upgrade),
// and the backward transform undoes the forward one (what a rollback after cutover
// does). Also: migrate up --expand-only never runs it (that is the old version's
// database).
func TestBreakingMigrationTransformsRows(t *testing.T) {
	ctx := context.Background()
	ms := people()
	db, err := postgres.OpenDB(pg.NewDatabase(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{To: 1}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(14, 2))
	before := map[string]postgres.Row{}
	for i := range 1000 {
		r := randomPerson(rng, i)
		before[r["id"].(string)] = r
		if _, err := db.ExecContext(ctx, `INSERT INTO people (id, full_name, age, note) VALUES ($1, $2, $3::integer, $4)`,
			r["id"], r["full_name"], r["age"], r["note"]); err != nil {
			t.Fatal(err)
		}
	}
	// The rows as the database gives them back are the generated ones.
	if got := tableRows(t, db, "people"); !reflect.DeepEqual(got, before) {
		t.Fatalf("rows read back differ from those written")
	}
	if ran, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{ExpandOnly: true}); err != nil || len(ran) != 0 {
		t.Fatalf("migrate --expand-only ran %v (%v); a breaking migration must wait for a copy", ran, err)
	}
	if _, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	after := tableRows(t, db, "people")
	if len(after) != len(before) {
		t.Fatalf("%d rows after the migration, %d before", len(after), len(before))
	}
	tr := ms[1].Transforms[0]
	for id, r := range before {
		fwd, err := tr.Forward(r)
		if err != nil {
			t.Fatalf("Forward(%v): %v", r, err)
		}
		if !reflect.DeepEqual(fwd, after[id]) {
			t.Errorf("row %s: the migration made %#v, Forward makes %#v", id, after[id], fwd)
		}
		back, err := tr.Backward(fwd)
		if err != nil {
			t.Fatalf("Backward(%v): %v", fwd, err)
		}
		if !reflect.DeepEqual(back, r) {
			t.Errorf("row %s: Backward(Forward(%#v)) = %#v", id, r, back)
		}
	}
}

// tableRows reads every row of table as the replay reads them (TableRows), by
// primary key id.
func tableRows(t *testing.T, db interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, table string) map[string]postgres.Row {
	t.Helper()
	rows, err := postgres.TableRows(context.Background(), db, table)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]postgres.Row, len(rows))
	for _, r := range rows {
		out[r["id"].(string)] = r
	}
	return out
}

// A breaking migration without both transforms is refused: the embedded ones are
// checked here (make test), Migrations() panics at the binary's start, Migrate
// applies nothing, each naming the migration and what it lacks.
func TestBreakingMigrationsShipTransforms(t *testing.T) {
	if _, err := postgres.LoadMigrations(); err != nil {
		t.Fatalf("the embedded migrations: %v", err)
	}
	if err := postgres.ValidateMigrations(people()); err != nil {
		t.Fatalf("the sample breaking migration: %v", err)
	}
	with := func(change func(m *postgres.Migration)) []postgres.Migration {
		ms := people()
		ms[1].Transforms = append([]postgres.Transform(nil), ms[1].Transforms...)
		change(&ms[1])
		return ms
	}
	tests := map[string]struct {
		ms   []postgres.Migration
		want string
	}{
		"no transform": {with(func(m *postgres.Migration) { m.Transforms = nil }),
			"breaking migration 0002_split_full_name has no transform"},
		"no backward": {with(func(m *postgres.Migration) { m.Transforms[0].Backward = nil }),
			"0002_split_full_name: transform of table people has no Backward"},
		"no forward": {with(func(m *postgres.Migration) { m.Transforms[0].Forward = nil }),
			"0002_split_full_name: transform of table people has no Forward"},
		"no table": {with(func(m *postgres.Migration) { m.Transforms[0].Table = "" }), "names no table"},
		"a transform on an expand migration": {with(func(m *postgres.Migration) { m.Kind = postgres.Expand }),
			"0002_split_full_name is expand but has transforms"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := postgres.ValidateMigrations(tt.ms)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ValidateMigrations = %v, want %q", err, tt.want)
			}
			db, err := postgres.OpenDB(pg.NewDatabase(t), 1)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = db.Close() }()
			ran, err := postgres.Migrate(context.Background(), db, tt.ms, postgres.MigrateOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || len(ran) != 0 {
				t.Errorf("Migrate = %v, %v; want nothing applied and %q", ran, err, tt.want)
			}
		})
	}
	// A breaking file parses as such; RegisterTransform attaches to it by version.
	files := fstest.MapFS{
		"m/0001_a.sql": {Data: []byte("-- kubeoauth:migration kind=expand\nCREATE TABLE a (id int PRIMARY KEY);\n")},
		"m/0002_b.sql": {Data: []byte("-- kubeoauth:migration kind=breaking\nALTER TABLE a RENAME id TO key;\n")},
	}
	ms, err := postgres.ParseMigrations(fs.FS(files), "m")
	if err != nil || len(ms) != 2 || ms[1].Kind != postgres.Breaking {
		t.Fatalf("ParseMigrations of a breaking file = %+v, %v", ms, err)
	}
	if err := postgres.ValidateMigrations(ms); err == nil || !strings.Contains(err.Error(), "0002_b has no transform") {
		t.Errorf("a breaking file without a registered transform: %v", err)
	}
}

// A binary with a breaking migration cannot serve without it, and one without it
// cannot serve after it: the plan picks Copy, naming it, from wherever it lies
// between the database's schema and the new one.
func TestPlanAcrossBreakingMigration(t *testing.T) {
	ms := append(people(), postgres.Migration{Version: 3, Name: "people_email", Kind: postgres.Expand})
	applied := func(kinds ...string) []postgres.AppliedMigration { return appliedAs(ms, kinds...) }
	if err := postgres.CheckSchema(ms, applied("expand")); err == nil || !strings.Contains(err.Error(), "lacks migration 0002_split_full_name") {
		t.Errorf("CheckSchema before the breaking migration: %v", err)
	}
	if err := postgres.CheckSchema(ms[:1], applied("expand", "breaking")); err == nil ||
		!strings.Contains(err.Error(), "breaking migration 0002_split_full_name") || !strings.Contains(err.Error(), "newer token server") {
		t.Errorf("CheckSchema of the old binary after the breaking migration: %v", err)
	}
	for name, tt := range map[string]struct {
		applied []postgres.AppliedMigration
		serving int
	}{
		"breaking next":                  {applied("expand"), 1},
		"breaking next, serving unknown": {applied("expand"), 0},
	} {
		t.Run(name, func(t *testing.T) {
			p := postgres.PlanUpgradeFrom(ms, tt.applied, tt.serving)
			if p.Mode != postgres.ModeCopy || p.SchemaTo != 3 || !strings.Contains(p.Reason, "migration 0002_split_full_name (breaking)") ||
				!strings.Contains(p.Reason, "copy of the database") {
				t.Errorf("plan = %+v; want Copy naming 0002_split_full_name (breaking)", p)
			}
		})
	}
	// Behind a contract migration the serving version does not know: still Copy,
	// naming the breaking migration the new version needs.
	behind := []postgres.Migration{ms[0], {Version: 2, Name: "drop_old", Kind: postgres.Contract},
		{Version: 3, Name: "split_full_name", Kind: postgres.Breaking, Transforms: ms[1].Transforms}}
	if p := postgres.PlanUpgradeFrom(behind, appliedAs(behind, "expand"), 1); p.Mode != postgres.ModeCopy ||
		!strings.Contains(p.Reason, "needs 0003_split_full_name") {
		t.Errorf("plan with the breaking migration behind a contract = %+v; want Copy naming 0003_split_full_name", p)
	}
	if p := postgres.PlanUpgrade(ms, applied("expand", "breaking")); p.Mode != postgres.ModeShared {
		t.Errorf("plan past the breaking migration = %+v; want Shared (only the expand after it is pending)", p)
	}
}
