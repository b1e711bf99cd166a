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

// TestMigrateFundingKeepsOldRows migrates a database that has only seen
// 0001, holding a credit, a completed charged call and a call in progress
// with its charge open: after 0002 the invariants hold, the old entries keep
// their ids, the open charge refunds, and charges and top-ups work.
func TestMigrateFundingKeepsOldRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openMigratedBefore(t, "0002_funding.sql")

	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	ms := store.UnixMilli(now)
	for _, q := range []string{
		`INSERT INTO ledger_entries (caller, currency, amount, kind, reference, balance_after, created_at)
			VALUES ('alice', 'USD', 1000, 'credit', 'credit:seed', 1000, ?1)`,
		`INSERT INTO idem_records (key, status, owner, generation, incarnation, lease_expires_at, expires_at, fingerprint,
			resp_status, resp_type, resp_body, created_at, updated_at)
			VALUES ('k0', 'in_progress', 'A', 1, 'A:1', ?1 + 60000, ?1 + 3600000, 'fp', NULL, NULL, NULL, ?1, ?1)`,
		`INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key, incarnation, generation, balance_after, created_at)
			VALUES ('alice', 'USD', -100, 'charge', 'charge:k0:A:1:1', 'k0', 'A:1', 1, 900, ?1)`,
		`UPDATE idem_records SET status = 'completed', resp_status = 200, resp_type = 'text/plain', resp_body = '' WHERE key = 'k0'`,
		`INSERT INTO idem_records (key, status, owner, generation, incarnation, lease_expires_at, expires_at, fingerprint, created_at, updated_at)
			VALUES ('k1', 'in_progress', 'A', 1, 'A:1', ?1 + 60000, ?1 + 3600000, 'fp', ?1, ?1)`,
		`INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key, incarnation, generation, balance_after, created_at)
			VALUES ('alice', 'USD', -200, 'charge', 'charge:k1:A:1:1', 'k1', 'A:1', 1, 700, ?1)`,
	} {
		_, err := db.Exec(ctx, q, ms)
		require.NoError(t, err, q)
	}

	require.NoError(t, sqlstore.Migrate(ctx, db))
	require.NoError(t, sqlstore.Migrate(ctx, db), "a second run applies nothing")
	s := sqlstore.New(db)
	require.NoError(t, s.CheckInvariants(ctx))
	entries, err := s.Entries(ctx, store.EntryFilter{Caller: "alice"})
	require.NoError(t, err)
	require.Len(t, entries, 3)
	require.Equal(t, []int64{1000, 900, 700}, []int64{entries[0].BalanceAfter, entries[1].BalanceAfter, entries[2].BalanceAfter})
	rows, err := db.Query(ctx, `SELECT group_concat(id, ',') FROM (SELECT id FROM ledger_entries ORDER BY id)`)
	require.NoError(t, err)
	require.Equal(t, "1,2,3", rows[0][0], "ids are kept")

	// The open charge of k1 refunds; a new call charges; the old ids go on.
	refunded, bal, err := s.Refund(ctx, store.Fence{Key: "k1", Owner: "A", Generation: 1}, now)
	require.NoError(t, err)
	require.True(t, refunded)
	require.Equal(t, int64(900), bal)
	c, err := s.ClaimCharge(ctx, store.ClaimChargeParams{ClaimParams: store.ClaimParams{Key: "k2", Owner: "B",
		Fingerprint: "fp", Now: now, Lease: time.Minute}, Caller: "alice", Currency: "USD", Amount: 50})
	require.NoError(t, err)
	require.NoError(t, c.ChargeErr)
	require.Equal(t, int64(850), c.Charge.Balance)
	rows, err = db.Query(ctx, `SELECT max(id) FROM ledger_entries`)
	require.NoError(t, err)
	require.EqualValues(t, 5, rows[0][0])

	// And funding works on the migrated schema.
	_, _, err = s.CreateTopup(ctx, store.Topup{Caller: "alice", ID: "tu_1", Rail: "stripe", Key: "t1", Fingerprint: "f",
		Amount: 100, Currency: "USD", CreatedAt: now})
	require.NoError(t, err)
	_, err = s.OpenTopup(ctx, "alice", "tu_1", "cs_1", "u", now)
	require.NoError(t, err)
	res, err := s.ApplyTopupEvent(ctx, store.TopupEvent{Rail: "stripe", EventID: "evt_1", Type: "checkout.session.completed",
		Caller: "alice", TopupID: "tu_1", Kind: store.TopupEventPaid, SessionID: "cs_1", Amount: 100, Currency: "USD", Now: now})
	require.NoError(t, err)
	require.Equal(t, int64(950), res.Balance)
	require.NoError(t, s.CheckInvariants(ctx))
}

// TestDatabaseEnforcesFundingInvariant writes SQL around the store: the
// schema refuses entries and top-ups that break the funding invariant, a
// debt refuses charges even with money on the balance, and CheckInvariants
// reports corrupted funding rows.
func TestDatabaseEnforcesFundingInvariant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db := setup(t, t.TempDir())
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 1000, Reference: "seed", Now: now})
	require.NoError(t, err)
	_, _, err = s.CreateTopup(ctx, store.Topup{Caller: "alice", ID: "tu_1", Rail: "stripe", Key: "t1", Fingerprint: "f",
		Amount: 500, Currency: "USD", CreatedAt: now})
	require.NoError(t, err)
	_, err = s.OpenTopup(ctx, "alice", "tu_1", "cs_1", "u", now)
	require.NoError(t, err)
	_, err = s.ApplyTopupEvent(ctx, store.TopupEvent{Rail: "stripe", EventID: "evt_1", Type: "checkout.session.completed",
		Caller: "alice", TopupID: "tu_1", Kind: store.TopupEventPaid, SessionID: "cs_1", Amount: 500, Currency: "USD", Now: now})
	require.NoError(t, err)
	require.NoError(t, s.CheckInvariants(ctx))

	insert := `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, topup_id, owed_change, balance_after, created_at)
		VALUES ('alice', 'USD', ?, ?, ?, ?, ?, 0, 0)`
	for name, args := range map[string][]any{
		"a reversal that gives money":        {10, "reversal", "r1", "tu_1", 0},
		"a reversal that moves nothing":      {0, "reversal", "r2", "tu_1", 0},
		"a reversal without its top-up":      {-10, "reversal", "r3", nil, 0},
		"a repayment that is not the debt's": {-10, "repay", "p1", nil, -5},
		"a credit that moves the debt":       {10, "credit", "c1", nil, 5},
		"a repayment of no debt":             {-10, "repay", "p2", nil, -10},
		"an unknown kind":                    {10, "gift", "g1", nil, 0},
	} {
		_, err := db.Exec(ctx, insert, args...)
		require.ErrorContains(t, err, "CHECK constraint failed", name)
	}
	_, err = db.Exec(ctx, `UPDATE topups SET reversed = credited + 1, status = 'refunded'`)
	require.ErrorContains(t, err, "CHECK constraint failed", "reversed above credited")
	_, err = db.Exec(ctx, `UPDATE topups SET status = 'open'`)
	require.ErrorContains(t, err, "CHECK constraint failed", "credited but not in a credited state")
	_, err = db.Exec(ctx, `INSERT INTO payment_events (caller, rail, event_id, type, topup_id, kind, created_at)
		VALUES ('alice', 'stripe', 'evt_1', 't', 'tu_1', 'paid', 0)`)
	require.ErrorContains(t, err, "UNIQUE constraint failed", "an event is recorded once")
	require.NoError(t, s.CheckInvariants(ctx))

	// A debt with money on the balance (not reachable through the store,
	// which repays first) still refuses charges, and says how much is owed.
	_, err = db.Exec(ctx, insert, 0, "reversal", "reversal:manual", "tu_1", 70)
	require.NoError(t, err)
	c, err := s.ClaimCharge(ctx, store.ClaimChargeParams{ClaimParams: store.ClaimParams{Key: "k", Owner: "A",
		Fingerprint: "fp", Now: now, Lease: time.Minute}, Caller: "alice", Currency: "USD", Amount: 10})
	require.NoError(t, err)
	var ife *store.InsufficientFundsError
	require.ErrorAs(t, c.ChargeErr, &ife)
	require.Equal(t, int64(70), ife.Owed)
	require.Equal(t, int64(1500), ife.Balance)
	require.ErrorContains(t, s.CheckInvariants(ctx), "reversed is its reversal entries' sum")

	// Corrupt the rows behind the triggers' back: the checks say so.
	_, err = db.Exec(ctx, `UPDATE balances SET owed = owed + 1`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "owed equals the sum of its entries' owed changes")
	_, err = db.Exec(ctx, `UPDATE topups SET credited = credited + 1`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "a top-up is credited once")
}
