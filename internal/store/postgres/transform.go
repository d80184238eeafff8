package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/lib/pq"
)

// Row is one table row by column name. A value is the column's text form, a string
// (PostgreSQL's output of the value as text: `{a,b}` for a text[], `\x...` for a
// bytea, JSON text for a jsonb, an ISO timestamp), or nil for NULL. The copy and the
// replay read every column as `col::text` and write it back as
// `$n::<the target column's type>`, so a transform sees one kind of value whatever
// the column, and nothing is lost between types on the way: every type's text
// output is accepted back by its input.
type Row map[string]any

// Transform carries the rows of one table across a breaking migration. Forward turns
// a row of the schema before the migration into the row the migration makes of it;
// Backward undoes it. During a Copy upgrade the replay runs Forward on every row
// written on the old version's database, and a rollback after cutover runs Backward
// on every row written on the new one's; the two must be each other's inverse
// (Backward(Forward(r)) = r), and Forward must agree with the migration's SQL, which
// the store test of each breaking migration checks. Both keep the primary key's
// columns and values, so that a deleted row's key names the same row on both sides.
//
// The transforms are Go, beside the SQL, rather than SQL functions in the migration
// file: they run in the new binary on rows it read from either database, so neither
// database needs to hold functions of the other's version (blue's must not be
// migrated), and they can be tested row by row without a database.
type Transform struct {
	// Table is the table the migration changes, as named before it.
	Table    string
	Forward  func(Row) (Row, error)
	Backward func(Row) (Row, error)
}

// transforms are the registered transforms by migration version.
var transforms = map[int][]Transform{}

// RegisterTransform attaches t to the embedded (or RegisterMigration'd) breaking
// migration version, from an init function next to the code that needs the new
// schema. Migrations() refuses a breaking migration without one, and one registered
// for a migration that is not breaking.
func RegisterTransform(version int, t Transform) {
	transforms[version] = append(transforms[version], t)
}

// ValidateMigrations checks that every breaking migration ships a forward and a
// backward transform for each table it names, and that no other kind has any: the
// token server refuses to start on migrations that break it (Migrations panics), and
// Migrate refuses to apply them.
func ValidateMigrations(ms []Migration) error {
	var errs []error
	for _, m := range ms {
		name := fmt.Sprintf("%04d_%s", m.Version, m.Name)
		if m.Kind != Breaking {
			if len(m.Transforms) > 0 {
				errs = append(errs, fmt.Errorf("migration %s is %s but has transforms: only a breaking migration has them", name, m.Kind))
			}
			continue
		}
		if len(m.Transforms) == 0 {
			errs = append(errs, fmt.Errorf("breaking migration %s has no transform: register a forward and a backward "+
				"row transform for each table it changes (postgres.RegisterTransform)", name))
		}
		seen := map[string]bool{}
		for i, t := range m.Transforms {
			switch {
			case t.Table == "":
				errs = append(errs, fmt.Errorf("breaking migration %s: transform %d names no table", name, i))
			case seen[t.Table]:
				errs = append(errs, fmt.Errorf("breaking migration %s: two transforms for table %s", name, t.Table))
			}
			seen[t.Table] = true
			if t.Forward == nil {
				errs = append(errs, fmt.Errorf("breaking migration %s: transform of table %s has no Forward", name, t.Table))
			}
			if t.Backward == nil {
				errs = append(errs, fmt.Errorf("breaking migration %s: transform of table %s has no Backward", name, t.Table))
			}
		}
	}
	return errors.Join(errs...)
}

// TableRows reads every row of table in q's current schema as the replay reads
// rows — every column by name, in its text form (a string, or nil for NULL) — for
// a breaking migration's own test: Forward of each row before the migration must
// equal the row its SQL made (docs/upgrades.md, "Testing a breaking migration").
func TableRows(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, table string) ([]Row, error) {
	rows, err := q.QueryContext(ctx, `SELECT column_name::text FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
	if err != nil {
		return nil, err
	}
	cols, err := scanStrings(rows)
	if err != nil {
		return nil, err
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("no table %s in the current schema", table)
	}
	return readRows(ctx, q, `SELECT `+textColumns(cols)+` FROM `+pq.QuoteIdentifier(table), cols) // #nosec G202 -- quoted
}
