// Package sqlstore implements store.Store in SQL over a store.DbClient. The
// same statements run on SQLite, libSQL and D1.
//
// Every state change is one statement whose result decides the winner; there
// is no read-then-write across round trips. Claim is an INSERT ... ON
// CONFLICT DO UPDATE whose SET clauses only change the row when the caller
// wins, and whose RETURNING row tells the caller what it won. Charge and
// Refund are one INSERT ... SELECT into the ledger whose WHERE clause carries
// the fence; triggers move the balance (CHECK balance >= 0) and the record's
// charge state in the same statement, and a guard trigger refuses a second
// charge on a key, whoever asks. Extra reads happen only on error paths, to
// say which error.
package sqlstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// Store is a store.Store over SQL.
type Store struct {
	db store.DbClient
	// MaxResponseBytes limits stored response bodies; zero means
	// store.DefaultMaxResponseBytes.
	MaxResponseBytes int
}

var _ store.Store = (*Store)(nil)

// New returns a Store over db. The schema must exist; see Migrate.
func New(db store.DbClient) *Store { return &Store{db: db} }

const recordCols = `key, status, owner, generation, lease_expires_at, expires_at, fingerprint,
	resp_status, resp_type, resp_body, error, charge_state, charge_count, charge_caller,
	charge_currency, charge_amount, created_at, updated_at, payment_ref, quota_state, hold_state, hold_max`

// The claim's conditions, over the existing row and the proposed one
// (excluded.*, whose created_at is now).
const (
	// condFresh: the TTL has expired, no live lease remains, and no charge
	// (nor unit of free quota) is open on an unfinished call (that one is taken over with its
	// charge, or refunded by Sweep; never forgotten).
	// The same holds for a settlement_pending payment (condPending): an
	// unfinished record holding one is taken over with it.
	condFresh = `(expires_at <= excluded.created_at AND NOT (status = 'in_progress' AND lease_expires_at > excluded.created_at)
		AND (status = 'completed' OR (charge_state <> 'charged' AND quota_state <> 'taken' AND NOT ` + condPending + `)))`
	// condPending: the record's current payment is settlement_pending.
	condPending = `EXISTS (SELECT 1 FROM payments p WHERE p.idem_key = idem_records.key
		AND p.ref = idem_records.payment_ref AND p.state = 'settlement_pending')`
	// condTake: same request, and the record failed or its lease expired.
	condTake = `(fingerprint = excluded.fingerprint AND (status = 'failed' OR (status = 'in_progress' AND lease_expires_at <= excluded.created_at)))`
	// condOwn: the same owner retries a claim it holds.
	condOwn = `(fingerprint = excluded.fingerprint AND status = 'in_progress' AND owner = excluded.owner)`
)

// claimTemplate is the claim statement; {source} is the proposed row:
// claimValues for Claim, whose proposed payment_ref is NULL, or
// claimPaymentSource for ClaimPayment. A won claim holds the proposed
// payment_ref, except that a takeover keeps a settlement_pending payment.
const claimTemplate = `INSERT INTO idem_records (key, status, owner, generation, incarnation, lease_expires_at,
	expires_at, fingerprint, charge_state, charge_count, charge_amount, created_at, updated_at, tool, caller, payment_ref)
{source}
ON CONFLICT (key) DO UPDATE SET
	status           = CASE WHEN {win} THEN 'in_progress' ELSE status END,
	owner            = CASE WHEN {win} THEN excluded.owner ELSE owner END,
	generation       = CASE WHEN {win} THEN generation + 1 ELSE generation END,
	incarnation      = CASE WHEN {fresh} THEN excluded.incarnation ELSE incarnation END,
	lease_expires_at = CASE WHEN {win} OR {own} THEN excluded.lease_expires_at ELSE lease_expires_at END,
	expires_at       = CASE WHEN {win} THEN excluded.expires_at ELSE expires_at END,
	fingerprint      = CASE WHEN {fresh} THEN excluded.fingerprint ELSE fingerprint END,
	resp_status      = CASE WHEN {win} THEN NULL ELSE resp_status END,
	resp_type        = CASE WHEN {win} THEN NULL ELSE resp_type END,
	resp_body        = CASE WHEN {win} THEN NULL ELSE resp_body END,
	error            = CASE WHEN {win} THEN NULL ELSE error END,
	charge_state     = CASE WHEN {fresh} THEN 'none' ELSE charge_state END,
	charge_caller    = CASE WHEN {fresh} THEN NULL ELSE charge_caller END,
	charge_currency  = CASE WHEN {fresh} THEN NULL ELSE charge_currency END,
	charge_amount    = CASE WHEN {fresh} THEN 0 ELSE charge_amount END,
	quota_state      = CASE WHEN {fresh} THEN 'none' ELSE quota_state END,
	quota_window     = CASE WHEN {fresh} THEN NULL ELSE quota_window END,
	hold_state       = CASE WHEN {fresh} THEN 'none' ELSE hold_state END,
	hold_max         = CASE WHEN {fresh} THEN 0 ELSE hold_max END,
	hold_capture     = CASE WHEN {fresh} THEN NULL ELSE hold_capture END,
	created_at       = CASE WHEN {fresh} THEN excluded.created_at ELSE created_at END,
	updated_at       = CASE WHEN {win} OR {own} THEN excluded.updated_at ELSE updated_at END,
	tool             = coalesce(tool, excluded.tool),
	caller           = coalesce(caller, excluded.caller),
	payment_ref      = CASE WHEN {fresh} OR ({win} AND NOT {pending}) THEN excluded.payment_ref ELSE payment_ref END
RETURNING ` + recordCols

const claimValues = `VALUES (?, 'in_progress', ?, 1, ?, ?, ?, ?, 'none', 0, 0, ?, ?, nullif(?, ''), nullif(?, ''), NULL)`

var claimReplacer = strings.NewReplacer(
	"{win}", "("+condFresh+" OR "+condTake+")",
	"{fresh}", condFresh,
	"{own}", condOwn,
	"{pending}", condPending,
)

var claimSQL = claimReplacer.Replace(strings.Replace(claimTemplate, "{source}", claimValues, 1))

// Claim implements store.Idempotency. It is one statement for every outcome.
func (s *Store) Claim(ctx context.Context, p store.ClaimParams) (store.ClaimResult, error) {
	if err := store.ValidateClaim(&p); err != nil {
		return store.ClaimResult{}, err
	}
	rows, err := s.db.Query(ctx, claimSQL, claimArgs(p)...)
	if err != nil {
		return store.ClaimResult{}, fmt.Errorf("claim: %w", err)
	}
	return claimOutcome(p, rows)
}

// claimArgs are claimSQL's arguments.
func claimArgs(p store.ClaimParams) []any {
	now := store.UnixMilli(p.Now)
	incarnation := p.Owner + ":" + strconv.FormatInt(now, 10)
	return []any{p.Key, p.Owner, incarnation, now + p.Lease.Milliseconds(), now + p.TTL.Milliseconds(),
		p.Fingerprint, now, now, p.Tool, p.CallerID}
}

// claimOutcome reads claimSQL's returned row: the record as it stands, and
// what that means for p's owner.
func claimOutcome(p store.ClaimParams, rows [][]any) (store.ClaimResult, error) {
	if len(rows) != 1 {
		return store.ClaimResult{}, fmt.Errorf("claim: got %d rows, want 1", len(rows))
	}
	rec, err := scanRecord(rows[0])
	if err != nil {
		return store.ClaimResult{}, fmt.Errorf("claim: %w", err)
	}
	switch {
	case rec.Fingerprint != p.Fingerprint:
		return store.ClaimResult{}, store.ErrFingerprintMismatch
	case rec.Status == store.StatusInProgress && rec.Owner == p.Owner:
		return store.ClaimResult{Outcome: store.OutcomeClaimed, Record: rec}, nil
	case rec.Status == store.StatusCompleted:
		return store.ClaimResult{Outcome: store.OutcomeCompleted, Record: rec}, nil
	case rec.Status == store.StatusInProgress:
		return store.ClaimResult{Outcome: store.OutcomeInProgress, Record: rec}, nil
	}
	return store.ClaimResult{}, fmt.Errorf("claim: unexpected record state %q", rec.Status)
}

// Peek implements store.Idempotency.
func (s *Store) Peek(ctx context.Context, key string) (store.Record, error) {
	rows, err := s.db.Query(ctx, `SELECT `+recordCols+` FROM idem_records WHERE key = ?`, key)
	if err != nil {
		return store.Record{}, fmt.Errorf("peek: %w", err)
	}
	if len(rows) == 0 {
		return store.Record{}, store.ErrNotFound
	}
	return scanRecord(rows[0])
}

const fenceWhere = ` WHERE key = ? AND owner = ? AND generation = ? AND status = 'in_progress'`

// Heartbeat implements store.Idempotency.
func (s *Store) Heartbeat(ctx context.Context, f store.Fence, leaseUntil, now time.Time) error {
	n, err := s.db.Exec(ctx, `UPDATE idem_records SET lease_expires_at = ?, updated_at = ?`+fenceWhere,
		store.UnixMilli(leaseUntil), store.UnixMilli(now), f.Key, f.Owner, f.Generation)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if n == 0 {
		return store.ErrFencedOut
	}
	return nil
}

// Complete implements store.Idempotency.
func (s *Store) Complete(ctx context.Context, p store.CompleteParams) error {
	if err := s.checkBody(p.Response.Body); err != nil {
		return err
	}
	if err := store.ValidateCapture(p.Capture); err != nil {
		return err
	}
	var capture any // NULL: capture the whole hold
	if p.Capture != nil {
		capture = *p.Capture
	}
	now := store.UnixMilli(p.Now)
	// A held key's hold is captured by this same statement: the trigger
	// idem_records_capture (0007) releases what is above hold_capture.
	complete := store.Stmt{Query: `UPDATE idem_records SET status = 'completed', resp_status = ?, resp_type = ?,
		resp_body = ?, error = NULL, lease_expires_at = ?, updated_at = ?, expires_at = max(expires_at, ?),
		hold_capture = CASE WHEN charge_state = 'charged' AND hold_state = 'held' THEN ? ELSE hold_capture END,
		hold_state = CASE WHEN charge_state = 'charged' AND hold_state = 'held' THEN 'captured' ELSE hold_state END` + fenceWhere,
		Args: []any{int64(p.Response.StatusCode), p.Response.ContentType, base64.StdEncoding.EncodeToString(p.Response.Body),
			now, now, now + p.TTL.Milliseconds(), capture, p.Key, p.Owner, p.Generation}}
	if p.Usage != nil {
		return s.completeCounted(ctx, complete, *p.Usage)
	}
	n, err := s.db.Exec(ctx, complete.Query, complete.Args...)
	if err != nil {
		return fmt.Errorf("complete: %w", err)
	}
	if n == 0 {
		return store.ErrFencedOut
	}
	return nil
}

// checkBody returns ErrTooLarge for a response body over the limit.
func (s *Store) checkBody(body []byte) error {
	limit := s.MaxResponseBytes
	if limit == 0 {
		limit = store.DefaultMaxResponseBytes
	}
	if len(body) > limit {
		return fmt.Errorf("%w: %d bytes, limit %d", store.ErrTooLarge, len(body), limit)
	}
	return nil
}

// Fail implements store.Idempotency.
func (s *Store) Fail(ctx context.Context, f store.Fence, reason string, now time.Time) error {
	t := store.UnixMilli(now)
	n, err := s.db.Exec(ctx, `UPDATE idem_records SET status = 'failed', error = ?, lease_expires_at = ?, updated_at = ?`+fenceWhere,
		reason, t, t, f.Key, f.Owner, f.Generation)
	if err != nil {
		return fmt.Errorf("fail: %w", err)
	}
	if n == 0 {
		return store.ErrFencedOut
	}
	return nil
}

// MaxSweepRefunds bounds the refund statements of one Sweep call, so a
// cron invocation stays within D1's per-invocation query limit.
const MaxSweepRefunds = 10

// sweepFailSQL marks abandoned records failed: in progress with an expired
// lease (the owner crashed, or lost its final writes), charged or not. It
// runs before any refund, so the stale owner is fenced out (its record is no
// longer in progress) before its money is returned: it can never complete a
// call whose charge the sweep refunded.
const sweepFailSQL = `UPDATE idem_records SET status = 'failed', error = 'abandoned: the lease expired before the call finished',
	updated_at = ?
WHERE key IN (SELECT key FROM idem_records WHERE status = 'in_progress' AND lease_expires_at <= ? LIMIT ?)`

// sweepRefundSQL refunds one failed record that still holds a charge (the
// engine refunds before it fails, so such a record was abandoned: failed by
// sweepFailSQL, or left so by a refund that never got through). One record
// per statement keeps each entry's balance_after exact.
const sweepRefundSQL = `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key,
	incarnation, generation, balance_after, created_at)
SELECT r.charge_caller, r.charge_currency, r.charge_amount, 'refund', 'refund:' || r.key || ':' || r.incarnation || ':' || r.charge_count,
	r.key, r.incarnation, r.generation,
	coalesce((SELECT balance FROM balances WHERE caller = r.charge_caller AND currency = r.charge_currency), 0) + r.charge_amount, ?
FROM idem_records r
WHERE r.key = (SELECT key FROM idem_records WHERE charge_state = 'charged' AND status = 'failed' LIMIT 1)
RETURNING idem_key`

// sweepQuotaSQL gives back the unit of free quota of one failed record
// that still holds one, as sweepRefundSQL returns a charge.
var sweepQuotaSQL = strings.Replace(quotaReturnSQL,
	"r.key = ? AND r.owner = ? AND r.generation = ? AND r.status = 'in_progress'",
	"r.key = (SELECT key FROM idem_records WHERE quota_state = 'taken' AND status = 'failed' LIMIT 1)", 1)

// sweepable selects records past their TTL and not held by a live lease.
const sweepable = `WHERE expires_at <= ? AND (status <> 'in_progress' OR lease_expires_at <= ?)`

// Sweep implements store.Idempotency: it fails abandoned records
// (sweepFailSQL), then refunds failed records that hold a charge
// (sweepRefundSQL, at most MaxSweepRefunds) and gives back their units of
// free quota (sweepQuotaSQL, as many), releases the verified
// payments of failed records (sweepReleaseSQL), then deletes expired ones. A
// record is deleted only once its refund is in the ledger and its payment,
// if any, is final (sweepPaymentFinal). A settlement_pending payment of an
// abandoned record stays pending: it is already due, and the reconciler
// (DuePayments, ResolvePayment) establishes what it did.
func (s *Store) Sweep(ctx context.Context, now time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: sweep limit %d", store.ErrInvalidArgument, limit)
	}
	t := store.UnixMilli(now)
	var settleErr error
	if _, err := s.db.Exec(ctx, sweepFailSQL, t, t, int64(limit)); err != nil {
		settleErr = fmt.Errorf("sweep: fail abandoned records: %w", err)
	}
	for i := 0; i < min(limit, MaxSweepRefunds); i++ {
		rows, err := s.db.Query(ctx, sweepRefundSQL, t)
		if err != nil {
			// The delete below skips charged rows, so going on is safe.
			settleErr = errors.Join(settleErr, fmt.Errorf("sweep: refund abandoned charge: %w", err))
			break
		}
		if len(rows) == 0 {
			break
		}
	}
	for i := 0; i < min(limit, MaxSweepRefunds); i++ {
		rows, err := s.db.Query(ctx, sweepQuotaSQL, t)
		if err != nil {
			settleErr = errors.Join(settleErr, fmt.Errorf("sweep: return abandoned quota: %w", err))
			break
		}
		if len(rows) == 0 {
			break
		}
	}
	if _, err := s.db.Exec(ctx, sweepReleaseSQL, t); err != nil {
		// The delete below keeps records whose payment is not final.
		settleErr = errors.Join(settleErr, fmt.Errorf("sweep: release verified payments: %w", err))
	}
	n, err := s.db.Exec(ctx, `DELETE FROM idem_records WHERE key IN (
		SELECT key FROM idem_records `+sweepable+` AND (status = 'completed' OR (charge_state <> 'charged' AND quota_state <> 'taken'))
			AND `+sweepPaymentFinal+`
		LIMIT ?)`, t, t, int64(limit))
	if err != nil {
		return 0, errors.Join(settleErr, fmt.Errorf("sweep: %w", err))
	}
	return int(n), settleErr
}

func scanRecord(r []any) (store.Record, error) {
	if len(r) != 22 {
		return store.Record{}, fmt.Errorf("scan record: %d columns, want 22", len(r))
	}
	rec := store.Record{
		Key:            asString(r[0]),
		Status:         store.Status(asString(r[1])),
		Owner:          asString(r[2]),
		Generation:     asInt64(r[3]),
		LeaseExpiresAt: store.FromUnixMilli(asInt64(r[4])),
		ExpiresAt:      store.FromUnixMilli(asInt64(r[5])),
		Fingerprint:    asString(r[6]),
		Error:          asString(r[10]),
		Charge: store.Charge{
			State:    store.ChargeState(asString(r[11])),
			Count:    asInt64(r[12]),
			Caller:   asString(r[13]),
			Currency: asString(r[14]),
			Amount:   asInt64(r[15]),
			Hold:     store.HoldState(asString(r[20])),
			Max:      asInt64(r[21]),
		},
		CreatedAt:  store.FromUnixMilli(asInt64(r[16])),
		UpdatedAt:  store.FromUnixMilli(asInt64(r[17])),
		PaymentRef: asString(r[18]),
		Quota:      store.QuotaState(asString(r[19])),
	}
	if rec.Status == store.StatusCompleted {
		body, err := base64.StdEncoding.DecodeString(asString(r[9]))
		if err != nil {
			return store.Record{}, fmt.Errorf("decode stored body: %w", err)
		}
		rec.Response = &store.Response{StatusCode: int(asInt64(r[7])), ContentType: asString(r[8]), Body: body}
	}
	return rec, nil
}

// asInt64 reads an integer column. D1 hands integers back as float64, exact
// below 2^53, which is why amounts stay below store.MaxAmount.
func asInt64(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case float64:
		return int64(math.Round(x))
	case []byte:
		n, _ := strconv.ParseInt(string(x), 10, 64)
		return n
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

func asString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case nil:
		return ""
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}
