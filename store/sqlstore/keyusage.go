package sqlstore

import (
	"context"
	"fmt"

	"github.com/toolgate/toolgate-go/store"
)

// KeyUsage implements store.KeyStats: one read, summed per UTC day in SQL
// (days are whole multiples of an hour since the epoch).
func (s *Store) KeyUsage(ctx context.Context, q store.KeyUsageQuery) ([]store.KeyUsage, error) {
	if err := store.ValidateKeyUsageQuery(q); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `SELECT (hour / 86400000) * 86400000 AS d, key_id, tool, currency, sum(calls),
		sum(free_calls), sum(charges), sum(charged), sum(refunds), sum(refunded), sum(released)
		FROM usage_keys_hourly WHERE caller = ? AND hour >= ? AND hour < ?
		GROUP BY d, key_id, tool, currency ORDER BY d, key_id, tool, currency`,
		q.Caller, store.UnixMilli(q.From), store.UnixMilli(q.To))
	if err != nil {
		return nil, fmt.Errorf("key usage: %w", err)
	}
	out := make([]store.KeyUsage, 0, len(rows))
	for _, r := range rows {
		n := func(i int) int64 { return asInt64(r[4+i]) }
		out = append(out, store.KeyUsage{Day: store.FromUnixMilli(asInt64(r[0])), Caller: q.Caller, Key: asString(r[1]),
			Tool: asString(r[2]), Currency: asString(r[3]), Calls: n(0), FreeCalls: n(1), Charges: n(2), Charged: n(3),
			Refunds: n(4), Refunded: n(5), Released: n(6)})
	}
	return out, nil
}

// keyOfEntry is the key an entry e counts under in usage_keys_hourly, as
// migration 0008's trigger computes it: a refund's or release's is its
// charge's.
const keyOfEntry = `CASE WHEN e.kind = 'charge' THEN e.key_id
	ELSE coalesce((SELECT ch.key_id FROM ledger_entries ch
		WHERE ch.reference = 'charge:' || substr(e.reference, instr(e.reference, ':') + 1)), e.key_id) END`

// keyUsageCheckSQL returns a row per (hour, caller, key, currency) whose
// per-key money differs from the ledger's entries, or whose ledger hour has
// no rows (from the oldest row on); see store.Stats.CheckUsage.
const keyUsageCheckSQL = `WITH u AS (SELECT hour, caller, key_id, currency, sum(charges) AS n1, sum(charged) AS a1,
		sum(refunds) AS n2, sum(refunded) AS a2, sum(released) AS a3
		FROM usage_keys_hourly GROUP BY hour, caller, key_id, currency),
	l AS (SELECT (e.created_at / 3600000) * 3600000 AS hour, e.caller, ` + keyOfEntry + ` AS key_id, e.currency,
		sum(e.kind = 'charge') AS n1, sum(CASE WHEN e.kind = 'charge' THEN -e.amount ELSE 0 END) AS a1,
		sum(e.kind = 'refund') AS n2, sum(CASE WHEN e.kind = 'refund' THEN e.amount ELSE 0 END) AS a2,
		sum(CASE WHEN e.kind = 'release' THEN e.amount ELSE 0 END) AS a3
		FROM ledger_entries e WHERE e.kind IN ('charge', 'refund', 'release') GROUP BY 1, 2, 3, 4)
SELECT u.caller || '/' || u.key_id || '/' || u.currency || ' at ' || u.hour || ': usage ' || u.n1 || ',' || u.a1
	|| ',' || u.n2 || ',' || u.a2 || ',' || u.a3 || ' ledger ' || coalesce(l.n1, 0) || ',' || coalesce(l.a1, 0)
	|| ',' || coalesce(l.n2, 0) || ',' || coalesce(l.a2, 0) || ',' || coalesce(l.a3, 0)
FROM u LEFT JOIN l ON l.hour = u.hour AND l.caller = u.caller AND l.key_id = u.key_id AND l.currency = u.currency
WHERE (u.n1, u.a1, u.n2, u.a2, u.a3) IS NOT (coalesce(l.n1, 0), coalesce(l.a1, 0), coalesce(l.n2, 0),
	coalesce(l.a2, 0), coalesce(l.a3, 0))
UNION ALL
SELECT l.caller || '/' || l.key_id || '/' || l.currency || ' at ' || l.hour || ': ledger entries without usage'
FROM l WHERE l.hour >= (SELECT min(hour) FROM usage_keys_hourly)
	AND NOT EXISTS (SELECT 1 FROM u WHERE u.hour = l.hour AND u.caller = l.caller AND u.key_id = l.key_id
		AND u.currency = l.currency)
LIMIT 1`
