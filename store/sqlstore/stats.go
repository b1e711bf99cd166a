package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// usageCols are the counters AddUsage and a counted Complete write, after
// the key (hour, caller, tool, currency); money is the ledger trigger's.
const usageCols = `calls, free_calls, replays, waits, r402, r409, r422, fail_5xx, fail_timeout, fail_4xx,
	latency_ms, lat_100, lat_300, lat_1000, lat_3000, lat_inf, last_at`

// usageUpsertSQL adds the rows of one JSON array parameter (each row an
// array: the key, then usageCols in order) to usage_hourly in one
// statement, whatever the number of rows (D1 allows 100 bound parameters).
// {cond} is the WHERE clause (SQLite needs one before ON CONFLICT here).
var usageUpsertSQL = func() string {
	cols := strings.Fields(strings.ReplaceAll("hour, caller, tool, currency, "+usageCols, ",", " "))
	sel := make([]string, len(cols))
	set := make([]string, 0, len(cols))
	for i, c := range cols {
		sel[i] = fmt.Sprintf("json_extract(value, '$[%d]')", i)
		switch {
		case i < 4:
		case c == "last_at":
			set = append(set, "last_at = max(last_at, excluded.last_at)")
		default:
			set = append(set, c+" = "+c+" + excluded."+c)
		}
	}
	return `INSERT INTO usage_hourly (` + strings.Join(cols, ", ") + `)
SELECT ` + strings.Join(sel, ", ") + ` FROM json_each(?) WHERE {cond}
ON CONFLICT (hour, caller, tool, currency) DO UPDATE SET ` + strings.Join(set, ", ")
}()

// callUpsertSQL is usageUpsertSQL for an executed call: through the view
// usage_calls (migration 0008), whose trigger adds the row to usage_hourly
// and its calls to usage_keys_hourly under the key (the row's last
// element), in the one statement.
var callUpsertSQL = func() string {
	cols := strings.Fields(strings.ReplaceAll("hour, caller, tool, currency, "+usageCols+", key_id", ",", " "))
	sel := make([]string, len(cols))
	for i := range cols {
		sel[i] = fmt.Sprintf("json_extract(value, '$[%d]')", i)
	}
	return `INSERT INTO usage_calls (` + strings.Join(cols, ", ") + `)
SELECT ` + strings.Join(sel, ", ") + ` FROM json_each(?) WHERE {cond}`
}()

// usageJSON encodes rows for usageUpsertSQL, or with their key for
// callUpsertSQL.
func usageJSON(us []store.Usage, withKey bool) (string, error) {
	rows := make([][]any, 0, len(us))
	for _, u := range us {
		row := []any{store.UnixMilli(store.HourOf(u.Hour)), u.Caller, u.Tool, u.Currency,
			u.Calls, u.FreeCalls, u.Replays, u.Waits, u.R402, u.R409, u.R422, u.Fail5xx, u.FailTimeout, u.Fail4xx,
			u.LatencyMs, u.Latency[0], u.Latency[1], u.Latency[2], u.Latency[3], u.Latency[4], store.UnixMilli(u.LastAt)}
		if withKey {
			row = append(row, u.Key)
		}
		rows = append(rows, row)
	}
	b, err := json.Marshal(rows)
	return string(b), err
}

// completeCounted is Complete with the call's counters. With a Batcher it
// is one round trip: the fenced UPDATE (RETURNING a row when it wins), then
// the counters only if it changed a row (changes() is the previous
// statement's count), in one atomic batch. A Complete retried after a lost
// reply changes nothing, so it counts nothing. Without a Batcher the
// counters are a second statement after a winning Complete.
func (s *Store) completeCounted(ctx context.Context, complete store.Stmt, u store.Usage) error {
	if err := store.ValidateUsage([]store.Usage{u}); err != nil {
		return err
	}
	doc, err := usageJSON([]store.Usage{u}, true)
	if err != nil {
		return fmt.Errorf("complete: encode usage: %w", err)
	}
	if b, ok := store.BatcherOf(s.db); ok {
		out, err := b.Batch(ctx, []store.Stmt{
			{Query: complete.Query + " RETURNING 1", Args: complete.Args},
			{Query: strings.Replace(callUpsertSQL, "{cond}", "changes() = 1", 1), Args: []any{doc}},
		})
		if err != nil {
			return fmt.Errorf("complete: %w", err)
		}
		if len(out) != 2 || len(out[0]) != 1 {
			return store.ErrFencedOut
		}
		return nil
	}
	n, err := s.db.Exec(ctx, complete.Query, complete.Args...)
	if err != nil {
		return fmt.Errorf("complete: %w", err)
	}
	if n == 0 {
		return store.ErrFencedOut
	}
	if _, err := s.db.Exec(ctx, strings.Replace(callUpsertSQL, "{cond}", "1", 1), doc); err != nil {
		return fmt.Errorf("complete: count usage: %w", err)
	}
	return nil
}

// AddUsage implements store.Stats: one statement for every row.
func (s *Store) AddUsage(ctx context.Context, us []store.Usage) error {
	if err := store.ValidateUsage(us); err != nil {
		return err
	}
	if len(us) == 0 {
		return nil
	}
	doc, err := usageJSON(us, false)
	if err != nil {
		return fmt.Errorf("add usage: %w", err)
	}
	if _, err := s.db.Exec(ctx, strings.Replace(usageUpsertSQL, "{cond}", "1", 1), doc); err != nil {
		return fmt.Errorf("add usage: %w", err)
	}
	return nil
}

// usageSums are the summed columns of a Usage answer, in Usage's order.
const usageSums = `sum(calls), sum(free_calls), sum(replays), sum(waits), sum(r402), sum(r409), sum(r422),
	sum(fail_5xx), sum(fail_timeout), sum(fail_4xx), sum(charges), sum(charged), sum(refunds), sum(refunded),
	sum(credits), sum(credited), sum(latency_ms), sum(lat_100), sum(lat_300), sum(lat_1000), sum(lat_3000),
	sum(lat_inf), max(last_at), sum(released)`

// Usage implements store.Stats. Buckets are computed in SQL from the hour
// (UTC days are whole multiples of an hour since the epoch).
func (s *Store) Usage(ctx context.Context, q store.UsageQuery) ([]store.Usage, error) {
	if err := store.ValidateUsageQuery(q); err != nil {
		return nil, err
	}
	from := store.UnixMilli(q.From)
	bucket := fmt.Sprintf("%d", from) // the whole range: one bucket at From
	if q.Bucket > 0 {
		bucket = fmt.Sprintf("(hour / %d) * %d", q.Bucket.Milliseconds(), q.Bucket.Milliseconds())
	}
	caller, tool := "''", "''"
	if q.ByCaller {
		caller = "caller"
	}
	if q.ByTool {
		tool = "tool"
	}
	rows, err := s.db.Query(ctx, `SELECT `+bucket+` AS b, `+caller+` AS c, `+tool+` AS t, currency, `+usageSums+`
		FROM usage_hourly WHERE hour >= ? AND hour < ? AND (? = '' OR caller = ?) AND (? = '' OR tool = ?)
		GROUP BY b, c, t, currency ORDER BY b, c, t, currency`,
		from, store.UnixMilli(q.To), q.Caller, q.Caller, q.Tool, q.Tool)
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	out := make([]store.Usage, 0, len(rows))
	for _, r := range rows {
		u := store.Usage{UsageKey: store.UsageKey{Hour: store.FromUnixMilli(asInt64(r[0])), Caller: asString(r[1]),
			Tool: asString(r[2]), Currency: asString(r[3])}}
		n := func(i int) int64 { return asInt64(r[4+i]) }
		u.Calls, u.FreeCalls, u.Replays, u.Waits, u.R402, u.R409, u.R422 = n(0), n(1), n(2), n(3), n(4), n(5), n(6)
		u.Fail5xx, u.FailTimeout, u.Fail4xx = n(7), n(8), n(9)
		u.Charges, u.Charged, u.Refunds, u.Refunded, u.Credits, u.Credited = n(10), n(11), n(12), n(13), n(14), n(15)
		u.LatencyMs = n(16)
		for i := range u.Latency {
			u.Latency[i] = n(17 + i)
		}
		if last := n(22); last > 0 {
			u.LastAt = store.FromUnixMilli(last)
		}
		u.Released = n(23)
		out = append(out, u)
	}
	return out, nil
}

// Calls implements store.Stats: one read for the records, one for their
// entries.
func (s *Store) Calls(ctx context.Context, q store.CallQuery) ([]store.CallSummary, error) {
	if err := store.ValidateCallQuery(q); err != nil {
		return nil, err
	}
	stuck := int64(0)
	if !q.StuckAt.IsZero() {
		stuck = store.UnixMilli(q.StuckAt)
	}
	const where = `WHERE (? = '' OR status = ?) AND (? = '' OR tool = ?) AND (? = '' OR caller = ?)
		AND (? = 0 OR (status = 'in_progress' AND lease_expires_at <= ?))
		ORDER BY updated_at DESC, key LIMIT ?`
	args := []any{string(q.Status), string(q.Status), q.Tool, q.Tool, q.Caller, q.Caller, stuck, stuck, int64(q.Limit)}
	rows, err := s.db.Query(ctx, `SELECT `+recordCols+`, coalesce(tool, ''), coalesce(caller, '') FROM idem_records `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("calls: %w", err)
	}
	out := make([]store.CallSummary, 0, len(rows))
	index := map[string]int{}
	for _, r := range rows {
		n := len(r) - 2 // recordCols, then tool and caller
		rec, err := scanRecord(r[:n])
		if err != nil {
			return nil, fmt.Errorf("calls: %w", err)
		}
		index[rec.Key] = len(out)
		out = append(out, store.CallSummary{Record: rec, Tool: asString(r[n]), Caller: asString(r[n+1])})
	}
	if len(out) == 0 {
		return out, nil
	}
	entries, err := s.db.Query(ctx, `SELECT caller, currency, amount, kind, reference, idem_key, balance_after, created_at
		FROM ledger_entries WHERE idem_key IN (SELECT key FROM idem_records `+where+`) ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("calls: entries: %w", err)
	}
	for _, r := range entries {
		i, ok := index[asString(r[5])]
		if !ok {
			continue // a record that changed between the two reads
		}
		out[i].Entries = append(out[i].Entries, store.Entry{Caller: asString(r[0]), Currency: asString(r[1]),
			Amount: asInt64(r[2]), Kind: asString(r[3]), Reference: asString(r[4]), Key: asString(r[5]),
			BalanceAfter: asInt64(r[6]), CreatedAt: store.FromUnixMilli(asInt64(r[7]))})
	}
	return out, nil
}

// CallerSummaries implements store.Stats.
func (s *Store) CallerSummaries(ctx context.Context, limit int) ([]store.CallerSummary, error) {
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("%w: caller limit must be 1..1000", store.ErrInvalidArgument)
	}
	rows, err := s.db.Query(ctx, `SELECT c.id, c.name, c.created_at, coalesce(b.currency, ''), coalesce(b.balance, 0),
		coalesce((SELECT max(last_at) FROM usage_hourly u WHERE u.caller = c.id), 0), coalesce(b.owed, 0)
		FROM (SELECT id, name, created_at FROM callers ORDER BY id LIMIT ?) c
		LEFT JOIN balances b ON b.caller = c.id ORDER BY c.id, b.currency`, int64(limit))
	if err != nil {
		return nil, fmt.Errorf("caller summaries: %w", err)
	}
	var out []store.CallerSummary
	for _, r := range rows {
		id := asString(r[0])
		if len(out) == 0 || out[len(out)-1].ID != id {
			cs := store.CallerSummary{Caller: store.Caller{ID: id, Name: asString(r[1]),
				CreatedAt: store.FromUnixMilli(asInt64(r[2]))}}
			if last := asInt64(r[5]); last > 0 {
				cs.LastSeen = store.FromUnixMilli(last)
			}
			out = append(out, cs)
		}
		if cur := asString(r[3]); cur != "" {
			last := &out[len(out)-1]
			last.Balances = append(last.Balances, store.CallerBalance{Currency: cur, Balance: asInt64(r[4]), Owed: asInt64(r[6])})
		}
	}
	return out, nil
}

// SweepUsage implements store.Stats.
func (s *Store) SweepUsage(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: sweep limit %d", store.ErrInvalidArgument, limit)
	}
	n, err := s.db.Exec(ctx, `DELETE FROM usage_hourly WHERE rowid IN (
		SELECT rowid FROM usage_hourly WHERE hour < ? LIMIT ?)`, store.UnixMilli(before), int64(limit))
	if err != nil {
		return 0, fmt.Errorf("sweep usage: %w", err)
	}
	if int(n) == limit {
		return limit, nil
	}
	m, err := s.db.Exec(ctx, `DELETE FROM usage_keys_hourly WHERE rowid IN (
		SELECT rowid FROM usage_keys_hourly WHERE hour < ? LIMIT ?)`, store.UnixMilli(before), int64(limit)-n)
	if err != nil {
		return int(n), fmt.Errorf("sweep usage per key: %w", err)
	}
	return int(n + m), nil
}

// usageCheckSQL returns a row per (hour, caller, currency) whose money
// counters differ from the ledger's entries (see store.Stats.CheckUsage).
const usageCheckSQL = `WITH u AS (SELECT hour, caller, currency, sum(charges) AS n1, sum(charged) AS a1,
		sum(refunds) AS n2, sum(refunded) AS a2, sum(credits) AS n3, sum(credited) AS a3, sum(released) AS a4
		FROM usage_hourly GROUP BY hour, caller, currency),
	l AS (SELECT (created_at / 3600000) * 3600000 AS hour, caller, currency,
		sum(kind = 'charge') AS n1, sum(CASE WHEN kind = 'charge' THEN -amount ELSE 0 END) AS a1,
		sum(kind = 'refund') AS n2, sum(CASE WHEN kind = 'refund' THEN amount ELSE 0 END) AS a2,
		sum(kind = 'credit') AS n3, sum(CASE WHEN kind = 'credit' THEN amount ELSE 0 END) AS a3,
		sum(CASE WHEN kind = 'release' THEN amount ELSE 0 END) AS a4
		FROM ledger_entries WHERE kind IN ('charge', 'refund', 'release', 'credit') GROUP BY 1, caller, currency)
SELECT u.caller || '/' || u.currency || ' at ' || u.hour || ': usage ' || u.n1 || ',' || u.a1 || ',' || u.n2 || ',' || u.a2 || ',' || u.n3 || ',' || u.a3
	|| ',' || u.a4 || ' ledger ' || coalesce(l.n1, 0) || ',' || coalesce(l.a1, 0) || ',' || coalesce(l.n2, 0) || ',' || coalesce(l.a2, 0)
	|| ',' || coalesce(l.n3, 0) || ',' || coalesce(l.a3, 0) || ',' || coalesce(l.a4, 0)
FROM u LEFT JOIN l ON l.hour = u.hour AND l.caller = u.caller AND l.currency = u.currency
WHERE (u.n1, u.a1, u.n2, u.a2, u.n3, u.a3, u.a4) IS NOT (coalesce(l.n1, 0), coalesce(l.a1, 0), coalesce(l.n2, 0),
	coalesce(l.a2, 0), coalesce(l.n3, 0), coalesce(l.a3, 0), coalesce(l.a4, 0))
UNION ALL
SELECT l.caller || '/' || l.currency || ' at ' || l.hour || ': ledger entries without usage'
FROM l WHERE l.hour >= (SELECT min(hour) FROM usage_hourly)
	AND NOT EXISTS (SELECT 1 FROM u WHERE u.hour = l.hour AND u.caller = l.caller AND u.currency = l.currency)
LIMIT 1`

// CheckUsage implements store.Stats.
func (s *Store) CheckUsage(ctx context.Context) error {
	rows, err := s.db.Query(ctx, usageCheckSQL)
	if err != nil {
		return fmt.Errorf("check usage: %w", err)
	}
	if len(rows) > 0 {
		return fmt.Errorf("usage invariant broken: %s", asString(rows[0][0]))
	}
	if rows, err = s.db.Query(ctx, keyUsageCheckSQL); err != nil {
		return fmt.Errorf("check usage per key: %w", err)
	}
	if len(rows) > 0 {
		return fmt.Errorf("usage invariant per key broken: %s", asString(rows[0][0]))
	}
	return nil
}
