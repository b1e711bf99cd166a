//go:build !js

package sqlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// TestDatabaseEnforcesPaymentInvariant goes around the store: the schema
// must refuse a payment moving backwards, changing its key, being
// forgotten, or credited back without its entry; and when the data is
// corrupted anyway, CheckInvariants must say which rule broke.
func TestDatabaseEnforcesPaymentInvariant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db := setup(t, t.TempDir())
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	pay := store.Payment{Caller: "x402:0xp", Ref: "ref-1", Rail: "x402", Network: "eip155:8453", Amount: 500,
		Currency: "USDC", Payload: []byte(`{}`), Requirements: []byte(`{}`), ValidBefore: now.Add(time.Hour)}
	res, err := s.ClaimPayment(ctx, store.ClaimPaymentParams{ClaimParams: store.ClaimParams{Key: "k", Owner: "A",
		Fingerprint: "fp", Now: now, Lease: time.Minute}, Payment: pay})
	require.NoError(t, err)
	f := store.Fence{Key: "k", Owner: "A", Generation: res.Record.Generation}
	require.NoError(t, s.MarkSettling(ctx, f, "ref-1", now))
	require.NoError(t, s.CompletePaid(ctx, store.CompleteParams{Fence: f, Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: now},
		"ref-1", store.PaymentOutcome{State: store.PaymentSettled, Transaction: "0xtx"}))
	require.NoError(t, s.CheckInvariants(ctx))

	_, err = db.Exec(ctx, `UPDATE payments SET state = 'verified'`)
	require.ErrorContains(t, err, "moves only forwards")
	_, err = db.Exec(ctx, `UPDATE payments SET state = 'not_charged'`)
	require.ErrorContains(t, err, "moves only forwards", "a settled payment never becomes not charged")
	_, err = db.Exec(ctx, `UPDATE payments SET idem_key = 'other'`)
	require.ErrorContains(t, err, "bound to its key for ever")
	_, err = db.Exec(ctx, `DELETE FROM payments`)
	require.ErrorContains(t, err, "payments are kept")
	_, err = db.Exec(ctx, `UPDATE payments SET state = 'credited_back'`)
	require.ErrorContains(t, err, "without its credit entry")
	_, err = db.Exec(ctx, `INSERT INTO payments (caller, ref, idem_key, rail, network, amount, currency, state, payload,
		requirements, valid_before, bound_by, created_at, updated_at)
		VALUES ('x402:0xp', 'ref-1', 'k2', 'x402', 'n', 1, 'USDC', 'verified', '{}', '{}', 0, 'B', 0, 0)`)
	require.ErrorContains(t, err, "UNIQUE constraint failed", "one payment, one key")
	_, err = db.Exec(ctx, `UPDATE payments SET amount = 9007199254740992`)
	require.Error(t, err)
	require.NoError(t, s.CheckInvariants(ctx))

	// A settled payment whose key then lost its answer.
	_, err = db.Exec(ctx, `UPDATE idem_records SET status = 'failed'`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "a settled payment's key delivered its 2xx answer")
	_, err = db.Exec(ctx, `UPDATE idem_records SET status = 'completed'`)
	require.NoError(t, err)

	// A record naming a payment that is not bound to it.
	_, err = db.Exec(ctx, `UPDATE idem_records SET payment_ref = 'ref-zzz'`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "a record's payment is bound to its key")
	_, err = db.Exec(ctx, `UPDATE idem_records SET payment_ref = 'ref-1'`)
	require.NoError(t, err)
	require.NoError(t, s.CheckInvariants(ctx))

	// A credit-back entry made behind the store's back.
	_, err = db.Exec(ctx, `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, balance_after, created_at)
		VALUES ('x402:0xp', 'USDC', 500, 'credit', 'credit:x402:ref-1', 500, 0)`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "credited_back payment has exactly one credit entry")

	// Two open payments on one key.
	_, err = db.Exec(ctx, `INSERT INTO payments (caller, ref, idem_key, rail, network, amount, currency, state, payload,
		requirements, valid_before, bound_by, created_at, updated_at)
		VALUES ('x402:0xp', 'ref-2', 'k', 'x402', 'n', 1, 'USDC', 'verified', '{}', '{}', 0, 'B', 0, 0),
		       ('x402:0xp', 'ref-3', 'k', 'x402', 'n', 1, 'USDC', 'verified', '{}', '{}', 0, 'B', 0, 0)`)
	require.NoError(t, err)
	err = s.CheckInvariants(ctx)
	require.ErrorContains(t, err, "at most one open payment per key")
	require.ErrorContains(t, err, "held by its key's unfinished record")
}
