//go:build !js

package sqlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

// TestMigrateMeteredKeepsOldLedger migrates a database that has seen every
// migration before 0007_metered.sql, holding a credit, a charged call in
// progress and a cap: 0007 rebuilds ledger_entries, and afterwards the old
// entries are all there, the old charge refunds through the new triggers
// (giving its spend back to the cap), every trigger exists again, and the
// invariants hold.
func TestMigrateMeteredKeepsOldLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openMigratedBefore(t, "0007_metered.sql")
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ms := store.UnixMilli(now)
	for _, q := range []string{
		`INSERT INTO spend_caps (caller, key_id, currency, limit_amount, reset, created_at, updated_at)
			VALUES ('alice', '*', 'USD', 500, 'never', 0, 0)`,
		`INSERT INTO ledger_entries (caller, currency, amount, kind, reference, balance_after, created_at)
			VALUES ('alice', 'USD', 1000, 'credit', 'credit:seed', 1000, ?)`,
		`INSERT INTO idem_records (key, status, owner, generation, incarnation, lease_expires_at, expires_at, fingerprint,
			charge_state, charge_count, charge_amount, created_at, updated_at, tool, caller)
			VALUES ('k', 'in_progress', 'A', 1, 'inc', ? + 60000, ? + 3600000, 'fp', 'none', 0, 0, ?, ?, 'search', 'alice')`,
		`INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key, incarnation, generation,
			balance_after, created_at, key_id)
			VALUES ('alice', 'USD', -100, 'charge', 'charge:k:inc:1', 'k', 'inc', 1, 900, ?, 'k_original')`,
	} {
		var args []any
		for range countParams(q) {
			args = append(args, ms)
		}
		_, err := db.Exec(ctx, q, args...)
		require.NoError(t, err, q)
	}

	require.NoError(t, sqlstore.Migrate(ctx, db))
	s := sqlstore.New(db)
	require.NoError(t, s.CheckInvariants(ctx))
	require.NoError(t, s.CheckUsage(ctx))
	entries, err := s.Entries(ctx, store.EntryFilter{Caller: "alice"})
	require.NoError(t, err)
	require.Len(t, entries, 2)
	require.Equal(t, []string{"credit", "charge"}, []string{entries[0].Kind, entries[1].Kind})
	caps, err := s.Caps(ctx, "alice", now)
	require.NoError(t, err)
	require.Equal(t, int64(100), caps[0].Spent)

	refunded, bal, err := s.Refund(ctx, store.Fence{Key: "k", Owner: "A", Generation: 1}, now)
	require.NoError(t, err)
	require.True(t, refunded)
	require.Equal(t, int64(1000), bal)
	caps, err = s.Caps(ctx, "alice", now)
	require.NoError(t, err)
	require.Equal(t, int64(0), caps[0].Spent, "the refund gave the spend back through the rebuilt trigger")

	rows, err := db.Query(ctx, `SELECT name FROM sqlite_master WHERE type = 'trigger' AND name IN ('ledger_entries_guard',
		'ledger_entries_apply', 'ledger_entries_no_update', 'ledger_entries_no_delete', 'ledger_entries_quota_guard',
		'ledger_entries_spend', 'usage_hourly_from_ledger', 'payments_credited_back') ORDER BY name`)
	require.NoError(t, err)
	require.Len(t, rows, 8, "every trigger on or naming ledger_entries is back")
	_, err = db.Exec(ctx, `DELETE FROM ledger_entries`)
	require.ErrorContains(t, err, "append-only")
	require.NoError(t, s.CheckInvariants(ctx))
}

// countParams counts the ? placeholders of q.
func countParams(q string) int {
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
		}
	}
	return n
}

// TestDatabaseEnforcesHolds writes SQL around the store: the schema must
// refuse a release without an open hold, a release above the hold, and a
// hold mark on an entry that is no charge; CheckInvariants must catch a
// capture above the maximum written behind the triggers' back.
func TestDatabaseEnforcesHolds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db := setup(t, t.TempDir())
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 1000, Reference: "seed", Now: now})
	require.NoError(t, err)
	for _, k := range []struct {
		key  string
		hold bool
	}{{"held", true}, {"plain", false}} {
		res, err := s.ClaimCharge(ctx, store.ClaimChargeParams{ClaimParams: store.ClaimParams{Key: k.key, Owner: "A",
			Fingerprint: "fp", Now: now, Lease: time.Minute}, Caller: "alice", Currency: "USD", Amount: 100, Hold: k.hold})
		require.NoError(t, err)
		require.NoError(t, res.ChargeErr)
	}
	release := `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key, incarnation, generation,
		balance_after, created_at, hold) VALUES ('alice', 'USD', ?, 'release', ?, ?, 'x', 1, 0, 0, ?)`
	_, err = db.Exec(ctx, release, 10, "release-plain", "plain", 0)
	require.ErrorContains(t, err, "release without an open hold")
	_, err = db.Exec(ctx, release, 101, "release-too-much", "held", 0)
	require.ErrorContains(t, err, "release without an open hold")
	_, err = db.Exec(ctx, release, 10, "release-marked", "held", 1)
	require.ErrorContains(t, err, "CHECK constraint failed")
	require.NoError(t, s.CheckInvariants(ctx))

	// A capture that kept more than the Complete asked for.
	capture := int64(30)
	plain, err := s.Peek(ctx, "plain")
	require.NoError(t, err)
	require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: store.Fence{Key: "plain", Owner: "A", Generation: plain.Generation},
		Now: now, Capture: &capture, Response: store.Response{StatusCode: 200}}))
	_, err = db.Exec(ctx, `UPDATE idem_records SET hold_state = 'captured', hold_max = 100, hold_capture = 30 WHERE key = 'plain'`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "a captured hold keeps what its Complete captured")
	_, err = db.Exec(ctx, `UPDATE idem_records SET hold_state = 'none', hold_max = 0, hold_capture = NULL WHERE key = 'plain'`)
	require.NoError(t, err)
	require.NoError(t, s.CheckInvariants(ctx))

	_, err = db.Exec(ctx, `UPDATE idem_records SET charge_amount = 150 WHERE key = 'held'`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "a hold captures at most its maximum")
	_, err = db.Exec(ctx, `UPDATE idem_records SET charge_amount = 100, status = 'completed' WHERE key = 'held'`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "a completed key holds no open hold")
}
