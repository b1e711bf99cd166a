package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// capWindow is the SQL of the start (Unix ms) of the window of reset that
// holds the instant t (Unix ms): UTC days, weeks from Monday (the epoch was
// a Thursday), months; 0 for never. 0005_pricing.sql's ledger_entries_spend
// spells out the same expression.
func capWindow(t, reset string) string {
	return strings.NewReplacer("{t}", t, "{r}", reset).Replace(`CASE {r} WHEN 'daily' THEN {t} - {t} % 86400000
		WHEN 'weekly' THEN {t} - ({t} + 259200000) % 604800000
		WHEN 'monthly' THEN CAST(strftime('%s', {t} / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000
		ELSE 0 END`)
}

// capSpent is the SQL of the spend of cap c in the window of n.t.
var capSpent = `coalesce((SELECT s.spent FROM cap_spend s WHERE s.caller = c.caller AND s.key_id = c.key_id
	AND s.currency = c.currency AND s.reset = c.reset AND s.window_start = ` + capWindow("n.t", "c.reset") + `), 0)`

// capsPassed selects the caps of (b.caller, b.currency) covering the key
// bound second that a charge of the amount bound third, at the instant
// bound first, would pass. chargeSQL charges only when there is none.
var capsPassed = `SELECT c.key_id, c.limit_amount, c.reset, ` + capSpent + `
	FROM (SELECT ? AS t) n, spend_caps c
	WHERE c.caller = b.caller AND c.currency = b.currency AND (c.key_id = '*' OR c.key_id = ?)
		AND c.limit_amount < ? + ` + capSpent

// capPassed reads which cap refused p (a per-key cap first), or nil.
func (s *Store) capPassed(ctx context.Context, p store.ChargeParams) (*store.Cap, error) {
	q := strings.NewReplacer("SELECT c.key_id", "SELECT c.updated_at, c.key_id",
		"c.caller = b.caller AND c.currency = b.currency", "c.caller = ? AND c.currency = ?").Replace(capsPassed)
	rows, err := s.db.Query(ctx, q+` ORDER BY c.key_id = '*' LIMIT 1`,
		store.UnixMilli(p.Now), p.Caller, p.Currency, p.KeyID, p.Amount)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	c := scanCap(p.Caller, p.Currency, rows[0][1:], p.Now)
	c.UpdatedAt = store.FromUnixMilli(asInt64(rows[0][0]))
	return &c, nil
}

// scanCap reads key_id, limit_amount, reset, spent.
func scanCap(caller, currency string, r []any, now time.Time) store.Cap {
	c := store.Cap{Caller: caller, Key: asString(r[0]), Currency: currency, Limit: asInt64(r[1]),
		Reset: store.CapReset(asString(r[2])), Spent: asInt64(r[3])}
	_, c.ResetsAt = c.Reset.Window(now)
	return c
}

// capNet is the SQL of the net spend (charges less their refunds and releases) of the
// entries ch of (caller, currency, key) from the instant bound fourth to
// the one bound fifth (0: no end).
const capNet = `SELECT coalesce(sum(-ch.amount), 0) - coalesce(sum(rf.amount), 0) - coalesce(sum(rl.amount), 0) AS net
	FROM ledger_entries ch LEFT JOIN ledger_entries rf ON rf.reference = 'refund:' || substr(ch.reference, 8)
		LEFT JOIN ledger_entries rl ON rl.reference = 'release:' || substr(ch.reference, 8)
	WHERE ch.caller = ? AND ch.currency = ? AND ch.kind = 'charge' AND (? = '*' OR ch.key_id = ?)
		AND ch.created_at >= ? AND (? = 0 OR ch.created_at < ?)`

// SetCap implements store.Caps: the cap, then its spend rows: those of
// another reset go (the ledger stays the record), and the current window's
// is computed from the ledger. One batch on a Batcher.
func (s *Store) SetCap(ctx context.Context, p store.SetCapParams) (store.Cap, error) {
	if err := store.ValidateCap(p); err != nil {
		return store.Cap{}, err
	}
	now := store.UnixMilli(p.Now)
	start, end := p.Reset.Window(p.Now)
	ws, we := store.UnixMilli(start), int64(0)
	if !end.IsZero() {
		we = store.UnixMilli(end)
	}
	key := []any{p.Caller, p.Key, p.Currency}
	_, err := s.batchOrEach(ctx, []store.Stmt{
		{Query: `INSERT INTO spend_caps (caller, key_id, currency, limit_amount, reset, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (caller, key_id, currency) DO UPDATE SET
			limit_amount = excluded.limit_amount, reset = excluded.reset, updated_at = excluded.updated_at`,
			Args: append(key, p.Limit, string(p.Reset), now, now)},
		{Query: `DELETE FROM cap_spend WHERE caller = ? AND key_id = ? AND currency = ? AND reset <> ?`,
			Args: append(key, string(p.Reset))},
		{Query: `INSERT INTO cap_spend (caller, key_id, currency, reset, window_start, spent, limit_at, updated_at)
			SELECT ?, ?, ?, ?, ?, net, max(net, ?), ? FROM (` + capNet + `) WHERE true
			ON CONFLICT (caller, key_id, currency, reset, window_start) DO UPDATE SET
			spent = excluded.spent, limit_at = excluded.limit_at, updated_at = excluded.updated_at`,
			Args: append(key, string(p.Reset), ws, p.Limit, now, p.Caller, p.Currency, p.Key, p.Key, ws, we, we)},
	})
	if err != nil {
		return store.Cap{}, fmt.Errorf("set cap: %w", err)
	}
	caps, err := s.Caps(ctx, p.Caller, p.Now)
	if err != nil {
		return store.Cap{}, err
	}
	for _, c := range caps {
		if c.Key == p.Key && c.Currency == p.Currency {
			return c, nil
		}
	}
	return store.Cap{}, fmt.Errorf("set cap: cap of %s/%s not found after writing it", p.Caller, p.Key)
}

// Caps implements store.Caps.
func (s *Store) Caps(ctx context.Context, caller string, now time.Time) ([]store.Cap, error) {
	rows, err := s.db.Query(ctx, `SELECT c.currency, c.updated_at, c.key_id, c.limit_amount, c.reset, `+capSpent+`
		FROM (SELECT ? AS t) n, spend_caps c WHERE c.caller = ? ORDER BY c.key_id, c.currency`,
		store.UnixMilli(now), caller)
	if err != nil {
		return nil, fmt.Errorf("caps: %w", err)
	}
	out := make([]store.Cap, 0, len(rows))
	for _, r := range rows {
		c := scanCap(caller, asString(r[0]), r[2:], now)
		c.UpdatedAt = store.FromUnixMilli(asInt64(r[1]))
		out = append(out, c)
	}
	return out, nil
}

// DeleteCap implements store.Caps: one statement; the trigger
// spend_caps_delete (0009_cap_delete.sql) deletes the cap's windows in it.
func (s *Store) DeleteCap(ctx context.Context, caller, key, currency string) error {
	n, err := s.db.Exec(ctx, `DELETE FROM spend_caps WHERE caller = ? AND key_id = ? AND currency = ?`, caller, key, currency)
	if err != nil {
		return fmt.Errorf("delete cap: %w", err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// capInvariantChecks return rows only when the cap invariant (see
// store/caps.go, 21-22) is broken.
var capInvariantChecks = []struct{ name, sql string }{
	{"a cap window's spend equals its charges less their refunds and releases", `
		SELECT s.caller || '/' || s.key_id || '/' || s.currency || '/' || s.reset || '/' || s.window_start
			|| ': spent ' || s.spent || ' ledger ' || (coalesce(sum(-ch.amount), 0) - coalesce(sum(rf.amount), 0) - coalesce(sum(rl.amount), 0))
		FROM cap_spend s
		LEFT JOIN ledger_entries ch ON ch.caller = s.caller AND ch.currency = s.currency AND ch.kind = 'charge'
			AND (s.key_id = '*' OR ch.key_id = s.key_id) AND ` + capWindow("ch.created_at", "s.reset") + ` = s.window_start
		LEFT JOIN ledger_entries rf ON rf.reference = 'refund:' || substr(ch.reference, 8)
		LEFT JOIN ledger_entries rl ON rl.reference = 'release:' || substr(ch.reference, 8)
		GROUP BY s.caller, s.key_id, s.currency, s.reset, s.window_start
		HAVING s.spent <> coalesce(sum(-ch.amount), 0) - coalesce(sum(rf.amount), 0) - coalesce(sum(rl.amount), 0)`},
	{"a cap window's spend is within the cap in force at its charges", `
		SELECT caller || '/' || key_id || '/' || currency || '/' || window_start || ': spent ' || spent || ' cap ' || limit_at
		FROM cap_spend WHERE spent > limit_at OR spent < 0`},
	{"a cap window belongs to a cap of its reset", `
		SELECT s.caller || '/' || s.key_id || '/' || s.currency || '/' || s.reset || '/' || s.window_start FROM cap_spend s
		WHERE NOT EXISTS (SELECT 1 FROM spend_caps c WHERE c.caller = s.caller AND c.key_id = s.key_id
			AND c.currency = s.currency AND c.reset = s.reset)`},
}
