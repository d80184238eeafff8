package postgres

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

// ReplayOptions configure ReplayPass.
type ReplayOptions struct {
	UpgradeID string
	// Direction is DirectionForward (from = the serving version's database, to = the copy)
	// or DirectionBackward (a rollback after cutover: from = the copy, to = the original).
	Direction string
	// Migrations are this binary's (Migrations()); the transforms of its breaking
	// migrations between the two schemas carry the rows.
	Migrations []Migration
	// PageSize is how many changes, and keys, are read at a time; 0 means 500.
	PageSize int
	Log      func(format string, args ...any)
}

// ReplayResult is what a pass did and what is left.
type ReplayResult struct {
	// Replayed is the number of rows (distinct keys) written or deleted on to.
	Replayed int
	// Pending is the number of changes on from after the pass's snapshot, and Lag
	// the age of the oldest of them.
	Pending int
	Lag     time.Duration
	// CutOver: the cutover of this direction is done; the pass did nothing, and no
	// pass of it ever will again.
	CutOver bool
}

// cutOverTo says whether the cutover of upgradeID in direction has put its marker
// on q's database.
func cutOverTo(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, upgradeID, direction string) (bool, error) {
	var exists bool
	if err := q.QueryRowContext(ctx, `SELECT to_regclass('kubeoauth_upgrade.cutover') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return false, err
	}
	err := q.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM kubeoauth_upgrade.cutover WHERE upgrade_id = $1 AND direction = $2)`,
		upgradeID, direction).Scan(&exists)
	return exists, err
}

// ReplayPass carries to the database to every row changed on from since the last
// pass (or the copy), and records how far it got, in one transaction on to:
//
//   - it holds an advisory lock on to for the upgrade and direction, so that two
//     replayers (the replay Deployment and the cutover's drain) never interleave;
//   - since is the replay row's snapshot in to (kubeoauth_upgrade.replay); until is a
//     new snapshot of from, taken by the REPEATABLE READ transaction that reads the
//     rows, so the rows it writes are exactly from's state as of until;
//   - the changes between the two (ChangesBetween) give the keys; each key's current
//     row is read on from, every column as text, run through the transforms of the
//     breaking migrations between the two schemas (Forward in order, or Backward in
//     reverse), and upserted on to, or deleted there when it is gone; deletes
//     first, children before parents, then upserts, parents before children, so
//     that foreign keys and unique constraints hold;
//   - with kubeoauth.replay = 'on' (the fence lets the replayer write), since =
//     until, and a NOTIFY for each client, access token and grant written and the
//     highest event, so the token servers on to drop what they cached.
//
// Killed anywhere, nothing of the pass stays; run again, it replays the same keys
// as of a later snapshot. Rows are re-read, not replayed change by change, so the
// order of changes does not matter.
func ReplayPass(ctx context.Context, from, to *sql.DB, o ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	if o.Direction != DirectionForward && o.Direction != DirectionBackward {
		return res, fmt.Errorf("replay: direction %q: want %s or %s", o.Direction, DirectionForward, DirectionBackward)
	}
	if o.PageSize <= 0 {
		o.PageSize = 500
	}
	conn, unlock, err := lockSession(ctx, to, replayLock(o.UpgradeID, o.Direction))
	if err != nil {
		return res, fmt.Errorf("replay: locking the target: %w", err)
	}
	defer unlock()
	// Once the cutover of this direction has put its marker on to (under this lock),
	// to serves on its own and its rows are newer than from's: a pass now would
	// write from's older rows over them (a revoked token active again). A replayer
	// that outlived its cutover does nothing.
	cutOver, err := cutOverTo(ctx, conn, o.UpgradeID, o.Direction)
	if err != nil {
		return res, fmt.Errorf("replay: reading the cutover marker: %w", err)
	}
	if cutOver {
		res.CutOver = true
		return res, nil
	}
	since, schemaFrom, schema, err := replayStart(ctx, conn, o)
	if err != nil {
		return res, err
	}
	chain, err := transformChain(o.Migrations, schemaFrom, schema, o.Direction)
	if err != nil {
		return res, err
	}

	src, err := from.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return res, err
	}
	defer func() { _ = src.Rollback() }()
	until, err := Snapshot(ctx, src)
	if err != nil {
		return res, fmt.Errorf("replay: taking the snapshot: %w", err)
	}
	keys, n, err := changedKeys(ctx, src, since, until, o.PageSize)
	if err != nil {
		return res, err
	}

	dst, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return res, err
	}
	defer func() { _ = dst.Rollback() }()
	if _, err := dst.ExecContext(ctx, `SET LOCAL kubeoauth.replay = 'on'`); err != nil {
		return res, err
	}
	if n > 0 {
		r := &replayer{src: src, dst: dst, page: o.PageSize, chain: chain}
		if err := r.apply(ctx, keys); err != nil {
			return res, err
		}
		res.Replayed = n
		if len(r.leftOut) > 0 && o.Log != nil {
			o.Log("left out the changes of tables only one side has: %s", strings.Join(r.leftOut, ", "))
		}
	}
	if _, err := dst.ExecContext(ctx, `UPDATE kubeoauth_upgrade.replay SET since = $3, replayed = replayed + $4, updated_at = now()
WHERE upgrade_id = $1 AND direction = $2`, o.UpgradeID, o.Direction, until, res.Replayed); err != nil {
		return res, err
	}
	if err := dst.Commit(); err != nil {
		return res, err
	}
	_ = src.Rollback()
	if res.Replayed > 0 && o.Log != nil {
		o.Log("replayed %d rows (%s) up to %s", res.Replayed, o.Direction, until)
	}
	// The changes of every transaction that ended before until was taken are done
	// with: each later window starts at until, which sees them. Without this the
	// changes table grows by a row per write for as long as the upgrade lasts (a
	// pause of days). A failure only leaves them for the next pass.
	if _, err := from.ExecContext(ctx, `DELETE FROM kubeoauth_capture.changes WHERE xid < pg_snapshot_xmin($1::pg_snapshot)`,
		until); err != nil && o.Log != nil {
		o.Log("trimming the changes replayed: %v", err)
	}
	res.Pending, res.Lag, err = pendingChanges(ctx, from, until)
	return res, err
}

// StartReplay records in target where a replay direction starts: since is a
// snapshot of its source (Snapshot), whose transactions target already has, and the
// rows go from schema schemaFrom to schemaTo. The copy writes the forward one (its
// snapshot); the cutover writes the backward one in the original database (the
// copy's snapshot after the final drain). Writing it again starts over from since.
func StartReplay(ctx context.Context, target *sql.DB, upgradeID, direction, since string, schemaFrom, schemaTo int) error {
	if direction != DirectionForward && direction != DirectionBackward {
		return fmt.Errorf("replay: direction %q: want %s or %s", direction, DirectionForward, DirectionBackward)
	}
	if err := ensureUpgradeSchema(ctx, target); err != nil {
		return err
	}
	_, err := target.ExecContext(ctx, `INSERT INTO kubeoauth_upgrade.replay (upgrade_id, direction, since, schema_from, schema_to)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (upgrade_id, direction) DO UPDATE SET since = EXCLUDED.since,
    schema_from = EXCLUDED.schema_from, schema_to = EXCLUDED.schema_to, replayed = 0, updated_at = now()`,
		upgradeID, direction, since, schemaFrom, schemaTo)
	return err
}

// replayStart reads the replay row of o's upgrade and direction on to: where the
// last pass ended and the schemas the rows go between.
func replayStart(ctx context.Context, conn *sql.Conn, o ReplayOptions) (since string, schemaFrom, schemaTo int, err error) {
	var hasReplay, hasCopy bool
	if err := conn.QueryRowContext(ctx, `SELECT to_regclass('kubeoauth_upgrade.replay') IS NOT NULL,
    to_regclass('kubeoauth_upgrade.copy') IS NOT NULL`).Scan(&hasReplay, &hasCopy); err != nil {
		return "", 0, 0, err
	}
	noRow := fmt.Errorf("replay: the target database has no %s replay of upgrade %s (db copy writes the forward one, "+
		"db cutover the backward one)", o.Direction, o.UpgradeID)
	if !hasReplay {
		return "", 0, 0, noRow
	}
	err = conn.QueryRowContext(ctx, `SELECT since, schema_from, schema_to FROM kubeoauth_upgrade.replay
WHERE upgrade_id = $1 AND direction = $2`, o.UpgradeID, o.Direction).Scan(&since, &schemaFrom, &schemaTo)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, 0, noRow
	}
	if err != nil {
		return "", 0, 0, err
	}
	if hasCopy && o.Direction == DirectionForward {
		var state string
		err := conn.QueryRowContext(ctx, `SELECT state FROM kubeoauth_upgrade.copy WHERE upgrade_id = $1`, o.UpgradeID).Scan(&state)
		if err == nil && state != CopyDone {
			return "", 0, 0, fmt.Errorf("replay: the copy of upgrade %s is %s, not done", o.UpgradeID, state)
		}
	}
	return since, schemaFrom, schemaTo, nil
}

// changedKeys lists, by table, the keys changed between the snapshots, each once,
// and how many.
func changedKeys(ctx context.Context, src *sql.Tx, since, until string, page int) (map[string][]json.RawMessage, int, error) {
	keys := map[string][]json.RawMessage{}
	seen := map[string]bool{}
	for after := int64(0); ; {
		changes, err := ChangesBetween(ctx, src, since, until, after, page)
		if err != nil {
			return nil, 0, fmt.Errorf("replay: reading changes: %w", err)
		}
		for _, c := range changes {
			if id := c.Table + "\x00" + string(c.Key); !seen[id] {
				seen[id] = true
				keys[c.Table] = append(keys[c.Table], c.Key)
			}
			after = c.Seq
		}
		if len(changes) < page {
			return keys, len(seen), nil
		}
	}
}

// apply writes the keys' rows: deletes in reverse foreign-key order of to's
// tables, then upserts in that order, then the NOTIFYs.
func (r *replayer) apply(ctx context.Context, keys map[string][]json.RawMessage) error {
	fromTables, err := tableInfos(ctx, r.src)
	if err != nil {
		return fmt.Errorf("replay: reading the source's tables: %w", err)
	}
	toTables, err := tableInfos(ctx, r.dst)
	if err != nil {
		return fmt.Errorf("replay: reading the target's tables: %w", err)
	}
	r.from, r.to = map[string]tableInfo{}, map[string]tableInfo{}
	for _, t := range fromTables {
		r.from[t.name] = t
	}
	var order []tableInfo // to's foreign-key order, of the tables changed
	for _, t := range toTables {
		r.to[t.name] = t
		if _, onSource := r.from[t.name]; onSource && keys[t.name] != nil {
			order = append(order, t)
		}
	}
	// A table only one side has is left out, as a column is (see upserts): one the
	// newer version's migrations added, going back, or dropped, going forward. Only
	// the side that has it uses it. Refusing it instead stopped every later pass, so
	// that nothing else was carried either: no revocation, no deleted grant.
	r.leftOut = nil
	for name := range keys {
		_, onSource := r.from[name]
		if _, onTarget := r.to[name]; !onSource || !onTarget {
			r.leftOut = append(r.leftOut, name)
		}
	}
	slices.Sort(r.leftOut)
	for i := len(order) - 1; i >= 0; i-- {
		if err := r.deletes(ctx, order[i].name, keys[order[i].name]); err != nil {
			return fmt.Errorf("replay: table %s: %w", order[i].name, err)
		}
	}
	for _, t := range order {
		if err := r.upserts(ctx, t.name, keys[t.name]); err != nil {
			return fmt.Errorf("replay: table %s: %w", t.name, err)
		}
	}
	if err := notifyReplayed(ctx, r.dst, keys); err != nil {
		return fmt.Errorf("replay: notifying: %w", err)
	}
	return nil
}

// pendingChanges counts the changes on from that a replay from snapshot since has
// still to carry, and the age of the oldest.
func pendingChanges(ctx context.Context, from *sql.DB, since string) (int, time.Duration, error) {
	var (
		n   int
		lag float64
	)
	err := from.QueryRowContext(ctx, `SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(at)), 0)::float8
FROM kubeoauth_capture.changes
WHERE xid >= pg_snapshot_xmin($1::pg_snapshot) AND NOT pg_visible_in_snapshot(xid, $1::pg_snapshot)`, since).Scan(&n, &lag)
	if err != nil {
		return 0, 0, fmt.Errorf("replay: counting pending changes: %w", err)
	}
	return n, time.Duration(lag * float64(time.Second)), nil
}

// transformChain lists, by table, the row transforms that carry a row of the
// replay's from schema to its to schema.
func transformChain(ms []Migration, schemaFrom, schemaTo int, direction string) (map[string][]func(Row) (Row, error), error) {
	lo, hi := min(schemaFrom, schemaTo), max(schemaFrom, schemaTo)
	if hi > len(ms) {
		return nil, &RefusedError{Reason: fmt.Sprintf("replay: the replay is between schemas %d and %d; this binary knows %d",
			schemaFrom, schemaTo, len(ms))}
	}
	if direction == DirectionForward && schemaFrom > schemaTo || direction == DirectionBackward && schemaFrom < schemaTo {
		return nil, fmt.Errorf("replay: a %s replay from schema %d to %d", direction, schemaFrom, schemaTo)
	}
	chain := map[string][]func(Row) (Row, error){}
	for i := lo; i < hi; i++ {
		m := ms[i]
		if direction == DirectionBackward {
			m = ms[hi-1-(i-lo)]
		}
		if m.Kind != Breaking {
			continue
		}
		for _, t := range m.Transforms {
			f := t.Forward
			if direction == DirectionBackward {
				f = t.Backward
			}
			name := fmt.Sprintf("%04d_%s", m.Version, m.Name)
			chain[t.Table] = append(chain[t.Table], func(r Row) (Row, error) {
				out, err := f(r)
				if err != nil {
					return nil, fmt.Errorf("%s transform of %s: %w", direction, name, err)
				}
				return out, nil
			})
		}
	}
	return chain, nil
}

type replayer struct {
	src, dst *sql.Tx
	page     int
	chain    map[string][]func(Row) (Row, error)
	from, to map[string]tableInfo
	// leftOut are the tables changed on the source that one side lacks.
	leftOut []string
}

// keyMatch is the condition that a row t has the key of r, a record made of a key's
// JSON (jsonb_populate_record, which reads each value as its column's type).
func keyMatch(key []string) string {
	conds := make([]string, len(key))
	for i, k := range key {
		q := pq.QuoteIdentifier(k)
		conds[i] = "t." + q + " = r." + q
	}
	return strings.Join(conds, " AND ")
}

func chunks(keys []json.RawMessage, n int, f func([]json.RawMessage) error) error {
	for len(keys) > 0 {
		c := keys[:min(n, len(keys))]
		keys = keys[len(c):]
		if err := f(c); err != nil {
			return err
		}
	}
	return nil
}

func jsonArray(keys []json.RawMessage) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(k)
	}
	b.WriteByte(']')
	return b.String()
}

// deletes deletes on to the rows of table whose keys are gone on from.
func (r *replayer) deletes(ctx context.Context, table string, keys []json.RawMessage) error {
	ft, tt := r.from[table], r.to[table]
	name := pq.QuoteIdentifier(table)
	// #nosec G202 -- identifiers are quoted.
	gone := `SELECT x.key::text FROM jsonb_array_elements($1::jsonb) AS x(key)
CROSS JOIN LATERAL jsonb_populate_record(NULL::` + name + `, x.key) AS r
WHERE NOT EXISTS (SELECT 1 FROM ` + name + ` t WHERE ` + keyMatch(ft.key) + `)`
	// #nosec G202 -- identifiers are quoted.
	del := `DELETE FROM ` + name + ` t USING jsonb_populate_recordset(NULL::` + name + `, $1::jsonb) AS r WHERE ` + keyMatch(tt.key)
	return chunks(keys, r.page, func(c []json.RawMessage) error {
		missing, err := goneKeys(ctx, r.src, gone, c)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			return nil
		}
		_, err = r.dst.ExecContext(ctx, del, jsonArray(missing))
		return err
	})
}

// goneKeys runs query, which selects the keys of c gone on the source.
func goneKeys(ctx context.Context, src *sql.Tx, query string, c []json.RawMessage) ([]json.RawMessage, error) {
	rows, err := src.QueryContext(ctx, query, jsonArray(c))
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var missing []json.RawMessage
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		missing = append(missing, json.RawMessage(k))
	}
	return missing, rows.Err()
}

// readRows runs query, which selects cols as text, into Rows.
func readRows(ctx context.Context, q queryer, query string, cols []string, args ...any) ([]Row, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []Row
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := Row{}
		for i, v := range vals {
			row[cols[i]] = nil
			if v.Valid {
				row[cols[i]] = v.String
			}
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// upserts writes on to the current rows on from of table's keys, through the
// transforms.
func (r *replayer) upserts(ctx context.Context, table string, keys []json.RawMessage) error {
	ft, tt := r.from[table], r.to[table]
	name := pq.QuoteIdentifier(table)
	cols := ft.columnNames()
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = "t." + pq.QuoteIdentifier(c) + "::text"
	}
	// #nosec G202 -- identifiers are quoted.
	read := `SELECT ` + strings.Join(sel, ", ") + ` FROM jsonb_array_elements($1::jsonb) AS x(key)
CROSS JOIN LATERAL jsonb_populate_record(NULL::` + name + `, x.key) AS r
JOIN ` + name + ` t ON ` + keyMatch(ft.key)
	return chunks(keys, r.page, func(c []json.RawMessage) error {
		batch, err := readRows(ctx, r.src, read, cols, jsonArray(c))
		if err != nil {
			return err
		}
		// Rows of one shape go in one statement: a round trip per row would make
		// the cutover's last drain, which writes hold for, slower.
		type shape struct {
			cols []columnInfo
			rows [][]any
		}
		shapes := map[string]*shape{}
		var order []string
		for _, row := range batch {
			for _, f := range r.chain[table] {
				if row, err = f(row); err != nil {
					return err
				}
			}
			cols, args, err := rowValues(tt, ft, row)
			if err != nil {
				return err
			}
			names := make([]string, len(cols))
			for i, c := range cols {
				names[i] = c.name
			}
			id := strings.Join(names, "\x00")
			if shapes[id] == nil {
				shapes[id] = &shape{cols: cols}
				order = append(order, id)
			}
			shapes[id].rows = append(shapes[id].rows, args)
		}
		for _, id := range order {
			if err := r.upsertRows(ctx, tt, shapes[id].cols, shapes[id].rows); err != nil {
				return err
			}
		}
		return nil
	})
}

// rowValues lists the columns of the target's table t that row has, with their
// values; from is the table on the source.
func rowValues(t, from tableInfo, row Row) ([]columnInfo, []any, error) {
	var (
		cols []columnInfo
		args []any
	)
	for _, c := range t.columns {
		v, ok := row[c.name]
		if !ok {
			continue
		}
		switch v.(type) {
		case string, nil:
		default:
			return nil, nil, fmt.Errorf("column %s: a row value must be its text form (a string) or nil, not %T", c.name, v)
		}
		cols = append(cols, c)
		args = append(args, v)
	}
	// A column of the source's table that the target's lacks is one only the source's
	// version uses (a contract migration dropped it, going forward; an expand
	// migration added it, going back): left out. One a transform made up is its
	// mistake.
	if len(cols) != len(row) {
		for name := range row {
			if !t.has(name) && !from.has(name) {
				return nil, nil, fmt.Errorf("the row has column %s, which the target's table does not", name)
			}
		}
	}
	return cols, args, nil
}

// maxParams is the most parameters PostgreSQL takes in one statement.
const maxParams = 65535

// upsertRows writes rows of cols to table t on to, each value cast from text to its
// column's type, as many rows a statement as its parameters allow. The rows have
// distinct keys (the pass deduplicated them), as one INSERT ... ON CONFLICT DO
// UPDATE requires.
func (r *replayer) upsertRows(ctx context.Context, t tableInfo, cols []columnInfo, rows [][]any) error {
	if len(cols) == 0 {
		return errors.New("a row with none of the target's columns")
	}
	names := make([]string, len(cols))
	var set []string
	isKey := map[string]bool{}
	for _, k := range t.key {
		isKey[k] = true
	}
	for i, c := range cols {
		names[i] = pq.QuoteIdentifier(c.name)
		if !isKey[c.name] {
			set = append(set, names[i]+" = EXCLUDED."+names[i])
		}
	}
	keys := make([]string, len(t.key))
	for i, k := range t.key {
		keys[i] = pq.QuoteIdentifier(k)
	}
	action := "NOTHING"
	if len(set) > 0 {
		action = "UPDATE SET " + strings.Join(set, ", ")
	}
	head := `INSERT INTO ` + pq.QuoteIdentifier(t.name) + ` (` + strings.Join(names, ", ") + `) VALUES `
	tail := ` ON CONFLICT (` + strings.Join(keys, ", ") + `) DO ` + action
	per := maxParams / len(cols)
	for len(rows) > 0 {
		n := min(per, len(rows))
		var b strings.Builder
		b.WriteString(head)
		args := make([]any, 0, n*len(cols))
		for i, row := range rows[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('(')
			for j, c := range cols {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString("$" + strconv.Itoa(len(args)+1) + "::" + c.typ)
				args = append(args, row[j])
			}
			b.WriteByte(')')
		}
		b.WriteString(tail)
		if _, err := r.dst.ExecContext(ctx, b.String(), args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// notifyReplayed sends, in the pass's transaction on to, what the token servers
// there listen for (Store.Follow): a client's ID on ClientsChannel, an access token's
// signature and a grant's ID on TokensChannel, and the highest event's seq on
// NotifyChannel, whether the row was written or deleted.
func notifyReplayed(ctx context.Context, dst *sql.Tx, keys map[string][]json.RawMessage) error {
	field := func(raw json.RawMessage, name string) string {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var m map[string]any
		if dec.Decode(&m) != nil {
			return ""
		}
		switch v := m[name].(type) {
		case string:
			return v
		case json.Number:
			return v.String()
		}
		return ""
	}
	var notes [][2]string
	for _, k := range keys["clients"] {
		if id := field(k, "id"); id != "" {
			notes = append(notes, [2]string{ClientsChannel, id})
		}
	}
	for _, k := range keys["tokens"] {
		if field(k, "kind") == kindAccessToken {
			if sig := field(k, "signature"); sig != "" {
				notes = append(notes, [2]string{TokensChannel, Invalidation{Signature: sig}.String()})
			}
		}
	}
	for _, k := range keys["consent_grants"] {
		if id := field(k, "id"); id != "" {
			notes = append(notes, [2]string{TokensChannel, Invalidation{GrantID: id}.String()})
		}
	}
	var last int64
	for _, k := range keys["events"] {
		if seq, err := strconv.ParseInt(field(k, "seq"), 10, 64); err == nil && seq > last {
			last = seq
		}
	}
	if last > 0 {
		notes = append(notes, [2]string{NotifyChannel, strconv.FormatInt(last, 10)})
	}
	for _, n := range notes {
		if _, err := dst.ExecContext(ctx, `SELECT pg_notify($1, $2)`, n[0], n[1]); err != nil {
			return err
		}
	}
	return nil
}
