package postgres

import (
	"errors"
	"fmt"
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
