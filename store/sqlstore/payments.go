package sqlstore

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// # Per-call payments in SQL
//
// A payment is a row of payments keyed by (caller, ref): the primary key is
// the rule that one payment binds one key for ever (invariant 12). The
// record's payment_ref names the payment its incarnation holds. Triggers
// (0004_payments.sql) keep states moving forwards, a payment's identity
// fixed, and credited_back tied to its credit entry.
//
// ClaimPayment is one atomic batch on a Batcher (paymentClaimStmts):
//
//  1. bind: insert the payment as verified, bound to the key, unless
//     (caller, ref) or (key, ref) exists (ON CONFLICT DO NOTHING);
//  2. claim: claimSQL whose proposed row exists only if the payment is
//     bound to this key and may pay for it (claimPaymentSource): bound to
//     another key, or in a state that moved money and neither replays nor
//     is kept by a takeover, the claim inserts and updates nothing and
//     returns no row: ErrPaymentReused;
//  3. revive: a payment the claim took that had failed before anything
//     moved (not_charged, or a refused settle never delivered) is verified
//     again;
//  4. undo: a bind of step 1 that the claim did not take (in progress
//     under another payment, completed, ErrFingerprintMismatch) is deleted,
//     so the payer may still use it under another key;
//  5. release: a verified payment of the key that the record no longer
//     holds (a takeover rebound the key) is not_charged: MarkSettling comes
//     before any settle, so it never moved money;
//  6. read the payment the record holds.
//
// Without a Batcher (libSQL over HTTP) the same statements run in order,
// each idempotent: a crash midway leaves at most a bind (usable by its key
// only) or a claim not yet revived or released, which a retry completes.
// Two concurrent claims of one payment and key may then interleave so that
// one's undo deletes the bind the other's claim was about to use: that
// claim answers ErrPaymentReused having changed nothing, and a retry wins
// or waits.

const paymentCols = `caller, ref, idem_key, rail, network, amount, currency, state, payload, requirements,
	valid_before, tx, reason, delivered, attempts, next_attempt_at, created_at, updated_at`

func scanPayment(r []any) store.Payment {
	return store.Payment{
		Caller:        asString(r[0]),
		Ref:           asString(r[1]),
		Key:           asString(r[2]),
		Rail:          asString(r[3]),
		Network:       asString(r[4]),
		Amount:        asInt64(r[5]),
		Currency:      asString(r[6]),
		State:         store.PaymentState(asString(r[7])),
		Payload:       []byte(asString(r[8])),
		Requirements:  []byte(asString(r[9])),
		ValidBefore:   store.FromUnixMilli(asInt64(r[10])),
		Transaction:   asString(r[11]),
		Reason:        asString(r[12]),
		Delivered:     asInt64(r[13]) == 1,
		Attempts:      int(asInt64(r[14])),
		NextAttemptAt: store.FromUnixMilli(asInt64(r[15])),
		CreatedAt:     store.FromUnixMilli(asInt64(r[16])),
		UpdatedAt:     store.FromUnixMilli(asInt64(r[17])),
	}
}

const paymentBindSQL = `INSERT INTO payments (caller, ref, idem_key, rail, network, amount, currency, state, payload,
	requirements, valid_before, bound_by, created_at, updated_at)
VALUES ($caller, $ref, $key, $rail, $network, $amount, $currency, 'verified', $payload, $requirements, $valid, $owner, $now, $now)
ON CONFLICT DO NOTHING`

// paymentUsable holds for a payment p that may pay for a claim of its key:
// nothing moved (verified, not_charged, a refused settle never delivered),
// or the key's record holds it and replays it (completed within its TTL)
// or is taken over with it (unfinished, settlement_pending).
const paymentUsable = `(p.state IN ('verified', 'not_charged') OR (p.state = 'settlement_failed' AND p.delivered = 0)
	OR EXISTS (SELECT 1 FROM idem_records r WHERE r.key = p.idem_key AND r.payment_ref = p.ref
		AND ((r.status = 'completed' AND r.expires_at > ?) OR (r.status <> 'completed' AND p.state = 'settlement_pending'))))`

// claimPaymentSource proposes the claim's row only when the presented
// payment is bound to this key and usable. The WHERE clause also settles
// SQLite's parsing rule for INSERT ... SELECT ... ON CONFLICT.
const claimPaymentSource = `SELECT ?, 'in_progress', ?, 1, ?, ?, ?, ?, 'none', 0, 0, ?, ?, nullif(?, ''), nullif(?, ''), ?
WHERE EXISTS (SELECT 1 FROM payments p WHERE p.caller = ? AND p.ref = ? AND p.idem_key = ? AND ` + paymentUsable + `)`

var claimPaymentSQL = claimReplacer.Replace(strings.Replace(claimTemplate, "{source}", claimPaymentSource, 1))

// heldBy holds when $owner claimed the key ($fp) and holds it in progress
// with payment $ref: what claimOutcome calls OutcomeClaimed.
const heldBy = `EXISTS (SELECT 1 FROM idem_records WHERE key = $key AND owner = $owner AND fingerprint = $fp
	AND status = 'in_progress' AND payment_ref = $ref)`

const paymentReviveSQL = `UPDATE payments SET state = 'verified', reason = '', updated_at = $now
WHERE caller = $caller AND ref = $ref AND idem_key = $key AND delivered = 0
	AND state IN ('not_charged', 'settlement_failed') AND ` + heldBy

const paymentUndoSQL = `DELETE FROM payments
WHERE caller = $caller AND ref = $ref AND idem_key = $key AND bound_by = $owner AND state = 'verified' AND attempts = 0
	AND NOT EXISTS (SELECT 1 FROM idem_records WHERE key = $key AND payment_ref = $ref)`

const paymentReleaseSQL = `UPDATE payments SET state = 'not_charged', updated_at = $now
WHERE idem_key = $key AND state = 'verified' AND ref IS NOT (SELECT payment_ref FROM idem_records WHERE key = $key)`

const paymentOfKeySQL = `SELECT ` + paymentCols + ` FROM payments
WHERE idem_key = $key AND ref = (SELECT payment_ref FROM idem_records WHERE key = $key)`

// paymentClaimStmts are ClaimPayment's statements; see "Per-call payments
// in SQL".
func paymentClaimStmts(p store.ClaimPaymentParams) []store.Stmt {
	pay := p.Payment
	now := store.UnixMilli(p.Now)
	args := map[string]any{
		"caller": pay.Caller, "ref": pay.Ref, "key": p.Key, "rail": pay.Rail, "network": pay.Network,
		"amount": pay.Amount, "currency": pay.Currency, "payload": string(pay.Payload),
		"requirements": string(pay.Requirements), "valid": store.UnixMilli(pay.ValidBefore),
		"owner": p.Owner, "fp": p.Fingerprint, "now": now,
	}
	claimArgs := append(claimArgs(p.ClaimParams), pay.Ref, pay.Caller, pay.Ref, p.Key, now)
	return []store.Stmt{
		named(paymentBindSQL, args),
		{Query: claimPaymentSQL, Args: claimArgs},
		named(paymentReviveSQL, args),
		named(paymentUndoSQL, args),
		named(paymentReleaseSQL, args),
		named(paymentOfKeySQL, args),
	}
}

// ClaimPayment implements store.Payments: one round trip on a Batcher;
// see "Per-call payments in SQL".
func (s *Store) ClaimPayment(ctx context.Context, p store.ClaimPaymentParams) (store.ClaimPaymentResult, error) {
	if err := store.ValidateClaim(&p.ClaimParams); err != nil {
		return store.ClaimPaymentResult{}, err
	}
	if err := store.ValidatePayment(p.Payment); err != nil {
		return store.ClaimPaymentResult{}, err
	}
	out, err := s.batchOrEach(ctx, paymentClaimStmts(p))
	if err != nil {
		return store.ClaimPaymentResult{}, fmt.Errorf("claim payment: %w", err)
	}
	if len(out[1]) == 0 {
		return store.ClaimPaymentResult{}, store.ErrPaymentReused
	}
	cr, err := claimOutcome(p.ClaimParams, out[1])
	if err != nil {
		return store.ClaimPaymentResult{}, err
	}
	res := store.ClaimPaymentResult{ClaimResult: cr}
	if len(out[5]) == 1 {
		res.Payment = scanPayment(out[5][0])
	}
	return res, nil
}

// paymentArgs are the named arguments of a fenced payment statement.
func paymentArgs(f store.Fence, ref string, now time.Time) map[string]any {
	return map[string]any{"key": f.Key, "owner": f.Owner, "gen": f.Generation, "ref": ref, "now": store.UnixMilli(now)}
}

// fencedPayment holds when $owner holds the key at $gen, in progress with
// payment $ref.
const fencedPayment = `EXISTS (SELECT 1 FROM idem_records WHERE key = $key AND owner = $owner AND generation = $gen
	AND status = 'in_progress' AND payment_ref = $ref)`

const markSettlingSQL = `UPDATE payments SET state = 'settlement_pending',
	next_attempt_at = CASE WHEN state = 'verified' THEN $now ELSE next_attempt_at END,
	updated_at = CASE WHEN state = 'verified' THEN $now ELSE updated_at END
WHERE idem_key = $key AND ref = $ref AND state IN ('verified', 'settlement_pending') AND ` + fencedPayment

// MarkSettling implements store.Payments: one statement.
func (s *Store) MarkSettling(ctx context.Context, f store.Fence, ref string, now time.Time) error {
	st := named(markSettlingSQL, paymentArgs(f, ref, now))
	n, err := s.db.Exec(ctx, st.Query, st.Args...)
	if err != nil {
		return fmt.Errorf("mark settling: %w", err)
	}
	if n == 0 {
		return store.ErrFencedOut
	}
	return nil
}

const completePaidPaymentSQL = `UPDATE payments SET state = $state, tx = $tx, reason = $reason, delivered = 1,
	next_attempt_at = CASE WHEN $state = 'settlement_pending' THEN $now ELSE next_attempt_at END, updated_at = $now
WHERE idem_key = $key AND ref = $ref AND state IN ('verified', 'settlement_pending') AND ` + fencedPayment + `
RETURNING 1`

// completePaidRecordSQL completes the record once its payment carries the
// outcome: in the same batch as completePaidPaymentSQL, or, without a
// Batcher, on a retry after a lost reply.
const completePaidRecordSQL = `UPDATE idem_records SET status = 'completed', resp_status = $code, resp_type = $ctype,
	resp_body = $body, error = NULL, lease_expires_at = $now, updated_at = $now, expires_at = max(expires_at, $keep)
WHERE key = $key AND owner = $owner AND generation = $gen AND status = 'in_progress' AND payment_ref = $ref
	AND EXISTS (SELECT 1 FROM payments WHERE idem_key = $key AND ref = $ref AND state = $state AND delivered = 1)
RETURNING 1`

// CompletePaid implements store.Payments: the payment's outcome, then the
// record, in one batch on a Batcher.
func (s *Store) CompletePaid(ctx context.Context, p store.CompleteParams, ref string, out store.PaymentOutcome) error {
	if err := store.ValidPaymentOutcome(out, store.PaymentSettled, store.PaymentPending, store.PaymentFailed); err != nil {
		return err
	}
	if p.Response.StatusCode/100 != 2 {
		return fmt.Errorf("%w: a paid call completes with a 2xx answer, got %d", store.ErrInvalidArgument, p.Response.StatusCode)
	}
	if err := s.checkBody(p.Response.Body); err != nil {
		return err
	}
	args := paymentArgs(p.Fence, ref, p.Now)
	args["state"], args["tx"], args["reason"] = string(out.State), out.Transaction, out.Reason
	args["code"], args["ctype"] = int64(p.Response.StatusCode), p.Response.ContentType
	args["body"] = base64.StdEncoding.EncodeToString(p.Response.Body)
	args["keep"] = store.UnixMilli(p.Now) + p.TTL.Milliseconds()
	res, err := s.batchOrEach(ctx, []store.Stmt{named(completePaidPaymentSQL, args), named(completePaidRecordSQL, args)})
	if err != nil {
		return fmt.Errorf("complete paid: %w", err)
	}
	if len(res[1]) == 0 {
		return store.ErrFencedOut
	}
	return nil
}

// failPaidPaymentSQL records the failure on the payment; a pending one
// stays pending (the earlier settle may have moved money) for not_charged.
const failPaidPaymentSQL = `UPDATE payments SET
	state = CASE WHEN state = 'settlement_pending' AND $state = 'not_charged' THEN state ELSE $state END,
	reason = $reason, next_attempt_at = CASE WHEN state = 'settlement_pending' THEN $now ELSE next_attempt_at END,
	updated_at = $now
WHERE idem_key = $key AND ref = $ref AND state IN ('verified', 'settlement_pending') AND ` + fencedPayment + `
RETURNING 1`

const failPaidRecordSQL = `UPDATE idem_records SET status = 'failed', error = $reason, lease_expires_at = $now, updated_at = $now
WHERE key = $key AND owner = $owner AND generation = $gen AND status = 'in_progress' AND payment_ref = $ref
	AND EXISTS (SELECT 1 FROM payments WHERE idem_key = $key AND ref = $ref AND state IN ($state, 'settlement_pending'))
RETURNING 1`

// FailPaid implements store.Payments: the payment, then the record, in one
// batch on a Batcher.
func (s *Store) FailPaid(ctx context.Context, f store.Fence, reason string, ref string, out store.PaymentOutcome, now time.Time) error {
	if err := store.ValidPaymentOutcome(out, store.PaymentNotCharged, store.PaymentFailed); err != nil {
		return err
	}
	args := paymentArgs(f, ref, now)
	args["state"], args["reason"] = string(out.State), reason
	if out.Reason != "" {
		args["reason"] = out.Reason
	}
	recArgs := paymentArgs(f, ref, now)
	recArgs["state"], recArgs["reason"] = string(out.State), reason
	res, err := s.batchOrEach(ctx, []store.Stmt{named(failPaidPaymentSQL, args), named(failPaidRecordSQL, recArgs)})
	if err != nil {
		return fmt.Errorf("fail paid: %w", err)
	}
	if len(res[1]) == 0 {
		return store.ErrFencedOut
	}
	return nil
}

// paymentLive holds when p's key is held in progress with p under a live
// lease: its owner settles it, the reconciler keeps away.
const paymentLive = `EXISTS (SELECT 1 FROM idem_records r WHERE r.key = p.idem_key AND r.payment_ref = p.ref
	AND r.status = 'in_progress' AND r.lease_expires_at > $now)`

// DuePayments implements store.Payments: the reconciler's queue, the one
// read across callers (payments_due).
func (s *Store) DuePayments(ctx context.Context, now time.Time, limit int) ([]store.Payment, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d", store.ErrInvalidArgument, limit)
	}
	st := named(`SELECT `+paymentColsOfP+` FROM payments p
		WHERE p.state = 'settlement_pending' AND p.next_attempt_at <= $now AND NOT `+paymentLive+`
		ORDER BY p.next_attempt_at, p.created_at, p.caller, p.ref LIMIT $limit`,
		map[string]any{"now": store.UnixMilli(now), "limit": int64(limit)})
	rows, err := s.db.Query(ctx, st.Query, st.Args...)
	if err != nil {
		return nil, fmt.Errorf("due payments: %w", err)
	}
	out := make([]store.Payment, 0, len(rows))
	for _, r := range rows {
		out = append(out, scanPayment(r))
	}
	return out, nil
}

// Losses implements store.Payments.
func (s *Store) Losses(ctx context.Context, limit int) ([]store.Payment, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d", store.ErrInvalidArgument, limit)
	}
	rows, err := s.db.Query(ctx, `SELECT `+paymentCols+` FROM payments
		WHERE state = 'settlement_failed' AND delivered = 1 ORDER BY updated_at DESC, caller, ref LIMIT ?`, int64(limit))
	if err != nil {
		return nil, fmt.Errorf("losses: %w", err)
	}
	out := make([]store.Payment, 0, len(rows))
	for _, r := range rows {
		out = append(out, scanPayment(r))
	}
	return out, nil
}

var paymentColsOfP = "p." + strings.ReplaceAll(strings.Join(strings.Fields(paymentCols), " "), ", ", ", p.")

// paymentCreditBack holds for a pending payment p that, found settled,
// must be credited back: no answer was delivered with it, its key is not
// held under a live lease, and its key stores no 2xx answer with it.
const paymentCreditBack = `(p.state = 'settlement_pending' AND p.delivered = 0 AND NOT ` + paymentLive + `
	AND NOT EXISTS (SELECT 1 FROM idem_records r WHERE r.key = p.idem_key AND r.payment_ref = p.ref
		AND r.status = 'completed' AND r.resp_status BETWEEN 200 AND 299))`

// resolveFenceOutSQL fails the abandoned record of a payment about to be
// credited back, so its stale owner can never complete it afterwards.
const resolveFenceOutSQL = `UPDATE idem_records SET status = 'failed',
	error = 'abandoned: the lease expired before the call finished; its payment was settled and credited back',
	lease_expires_at = $now, updated_at = $now
WHERE key = (SELECT p.idem_key FROM payments p WHERE p.caller = $caller AND p.ref = $ref AND ` + paymentCreditBack + `)
	AND payment_ref = $ref AND status = 'in_progress'`

const resolveCreditSQL = `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, balance_after, created_at)
SELECT p.caller, p.currency, p.amount, 'credit', 'credit:x402:' || p.ref,
	coalesce((SELECT balance FROM balances WHERE caller = p.caller AND currency = p.currency), 0) + p.amount, $now
FROM payments p
WHERE p.caller = $caller AND p.ref = $ref AND ` + paymentCreditBack + `
	AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE reference = 'credit:x402:' || p.ref)`

// resolveSettledSQL records a settle found to have gone through: credited
// back (the trigger payments_credited_back refuses it without its entry)
// or settled.
const resolveSettledSQL = `UPDATE payments AS p SET
	state = CASE WHEN ` + paymentCreditBack + ` THEN 'credited_back' ELSE 'settled' END,
	tx = $tx, reason = $reason, attempts = attempts + 1, updated_at = $now
WHERE p.caller = $caller AND p.ref = $ref AND p.state = 'settlement_pending' AND NOT ` + paymentLive

const resolveFailedSQL = `UPDATE payments AS p SET state = 'settlement_failed', tx = $tx, reason = $reason,
	attempts = attempts + 1, updated_at = $now
WHERE p.caller = $caller AND p.ref = $ref AND p.state = 'settlement_pending' AND NOT ` + paymentLive

const resolveRetrySQL = `UPDATE payments AS p SET reason = $reason, attempts = attempts + 1, next_attempt_at = $next,
	updated_at = $now
WHERE p.caller = $caller AND p.ref = $ref AND p.state = 'settlement_pending' AND NOT ` + paymentLive

// ResolvePayment implements store.Payments: one batch on a Batcher. A
// credit-back is the record fenced out, the credit entry, then the state;
// without a Batcher each is idempotent and a retry completes a partial one.
func (s *Store) ResolvePayment(ctx context.Context, caller, ref string, out store.PaymentOutcome, next, now time.Time) (store.Payment, error) {
	if err := store.ValidPaymentOutcome(out, store.PaymentSettled, store.PaymentFailed, store.PaymentPending); err != nil {
		return store.Payment{}, err
	}
	args := map[string]any{"caller": caller, "ref": ref, "tx": out.Transaction, "reason": out.Reason,
		"now": store.UnixMilli(now), "next": store.UnixMilli(next)}
	var stmts []store.Stmt
	switch out.State {
	case store.PaymentSettled:
		stmts = append(stmts, named(resolveFenceOutSQL, args), named(resolveCreditSQL, args), named(resolveSettledSQL, args))
	case store.PaymentFailed:
		stmts = append(stmts, named(resolveFailedSQL, args))
	default:
		stmts = append(stmts, named(resolveRetrySQL, args))
	}
	stmts = append(stmts, named(`SELECT `+paymentCols+` FROM payments WHERE caller = $caller AND ref = $ref`, args))
	res, err := s.batchOrEach(ctx, stmts)
	if err != nil {
		if isConstraint(err, "CHECK") {
			return store.Payment{}, fmt.Errorf("%w: balance would exceed %d", store.ErrInvalidAmount, store.MaxAmount)
		}
		return store.Payment{}, fmt.Errorf("resolve payment: %w", err)
	}
	rows := res[len(res)-1]
	if len(rows) == 0 {
		return store.Payment{}, store.ErrNotFound
	}
	return scanPayment(rows[0]), nil
}

// PaymentByRef implements store.Payments.
func (s *Store) PaymentByRef(ctx context.Context, caller, ref string) (store.Payment, error) {
	rows, err := s.db.Query(ctx, `SELECT `+paymentCols+` FROM payments WHERE caller = ? AND ref = ?`, caller, ref)
	if err != nil {
		return store.Payment{}, fmt.Errorf("payment by ref: %w", err)
	}
	if len(rows) == 0 {
		return store.Payment{}, store.ErrNotFound
	}
	return scanPayment(rows[0]), nil
}

// PaymentsByKey implements store.Payments.
func (s *Store) PaymentsByKey(ctx context.Context, key string) ([]store.Payment, error) {
	rows, err := s.db.Query(ctx, `SELECT `+paymentCols+` FROM payments WHERE idem_key = ?
		ORDER BY created_at, rowid`, key)
	if err != nil {
		return nil, fmt.Errorf("payments by key: %w", err)
	}
	out := make([]store.Payment, 0, len(rows))
	for _, r := range rows {
		out = append(out, scanPayment(r))
	}
	return out, nil
}

// sweepReleaseSQL releases the verified payments of failed records (an
// abandoned call, failed by the sweep before it was marked settling): no
// settle was sent, so nothing moved.
const sweepReleaseSQL = `UPDATE payments SET state = 'not_charged', updated_at = ?
WHERE state = 'verified' AND EXISTS (SELECT 1 FROM idem_records r
	WHERE r.key = payments.idem_key AND r.payment_ref = payments.ref AND r.status = 'failed')`

// sweepPaymentFinal holds for a record whose payment, if any, is final:
// only then may the TTL sweep delete it.
const sweepPaymentFinal = `(payment_ref IS NULL OR EXISTS (SELECT 1 FROM payments p
	WHERE p.idem_key = idem_records.key AND p.ref = idem_records.payment_ref
		AND p.state IN ('not_charged', 'settled', 'settlement_failed', 'credited_back')))`

// paymentInvariantChecks return rows only when the payment invariant
// (12-16 of store.Payments) is broken.
var paymentInvariantChecks = []struct{ name, sql string }{
	{"a record's payment is bound to its key", `
		SELECT r.key || ': payment ' || r.payment_ref FROM idem_records r
		WHERE r.payment_ref IS NOT NULL
			AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.idem_key = r.key AND p.ref = r.payment_ref)`},
	{"a verified or undelivered pending payment is held by its key's unfinished record", `
		SELECT p.caller || '/' || p.ref || ': ' || p.state || ' for ' || p.idem_key FROM payments p
		WHERE (p.state = 'verified' OR (p.state = 'settlement_pending' AND p.delivered = 0))
			AND NOT EXISTS (SELECT 1 FROM idem_records r WHERE r.key = p.idem_key AND r.payment_ref = p.ref
				AND r.status IN ('in_progress', 'failed'))`},
	{"at most one open payment per key", `
		SELECT idem_key || ': ' || count(*) || ' open payments' FROM payments
		WHERE state = 'verified' OR (state = 'settlement_pending' AND delivered = 0)
		GROUP BY idem_key HAVING count(*) > 1`},
	{"a credited_back payment has exactly one credit entry of its amount", `
		SELECT p.caller || '/' || p.ref || ': ' || p.state || ', ' || count(e.id) || ' credit-back entries'
		FROM payments p LEFT JOIN ledger_entries e ON e.reference = 'credit:x402:' || p.ref
		GROUP BY p.caller, p.ref
		HAVING (p.state = 'credited_back') <> (count(e.id) = 1)
			OR (count(e.id) = 1 AND (max(e.caller) <> p.caller OR max(e.currency) <> p.currency
				OR max(e.amount) <> p.amount OR max(e.kind) <> 'credit'))`},
	{"every credit-back entry belongs to a credited_back payment", `
		SELECT e.reference FROM ledger_entries e
		WHERE e.reference LIKE 'credit:x402:%' AND NOT EXISTS (SELECT 1 FROM payments p
			WHERE 'credit:x402:' || p.ref = e.reference AND p.caller = e.caller AND p.state = 'credited_back')`},
	{"a settled payment's key delivered its 2xx answer", `
		SELECT r.key || ': ' || r.status || ' with settled ' || p.ref FROM payments p
		JOIN idem_records r ON r.key = p.idem_key AND r.payment_ref = p.ref
		WHERE p.state = 'settled' AND NOT (r.status = 'completed' AND r.resp_status BETWEEN 200 AND 299)`},
	{"a stored 2xx answer of a paid key has its payment settled, pending or lost", `
		SELECT r.key || ': payment ' || p.ref || ' ' || p.state || ' delivered ' || p.delivered
		FROM idem_records r JOIN payments p ON p.idem_key = r.key AND p.ref = r.payment_ref
		WHERE r.status = 'completed' AND r.resp_status BETWEEN 200 AND 299
			AND NOT (p.delivered = 1 AND p.state IN ('settled', 'settlement_pending', 'settlement_failed'))`},
	{"a delivered payment's answer was stored", `
		SELECT p.caller || '/' || p.ref FROM payments p
		WHERE p.delivered = 1 AND p.state NOT IN ('settled', 'settlement_pending', 'settlement_failed')`},
}
