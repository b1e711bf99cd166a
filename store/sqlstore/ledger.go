package sqlstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

var chargeSQL = `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key,
	incarnation, generation, balance_after, created_at, key_id, hold)
SELECT b.caller, b.currency, -?, 'charge', 'charge:' || r.key || ':' || r.incarnation || ':' || (r.charge_count + 1),
	r.key, r.incarnation, r.generation, b.balance - ?, ?, ?, ?
FROM idem_records r, balances b
WHERE r.key = ? AND r.owner = ? AND r.generation = ? AND r.status = 'in_progress'
	AND r.charge_state <> 'charged' AND r.quota_state <> 'taken'
	AND b.caller = ? AND b.currency = ? AND b.balance >= ? AND b.owed = 0
	AND NOT EXISTS (` + capsPassed + `)
RETURNING balance_after`

// chargeArgs are chargeSQL's arguments; fence is the generation, or the
// fingerprint for chargeClaimedSQL.
func chargeArgs(p store.ChargeParams, fence any) []any {
	now := store.UnixMilli(p.Now)
	hold := int64(0)
	if p.Hold {
		hold = 1
	}
	return []any{p.Amount, p.Amount, now, p.KeyID, hold, p.Key, p.Owner, fence, p.Caller, p.Currency, p.Amount,
		now, p.KeyID, p.Amount}
}

// chargeClaimedSQL is chargeSQL for the batch that claims and charges. The
// generation is not known before the claim, so it is fenced by what makes
// claimOutcome say OutcomeClaimed: within one atomic batch, the record is in
// progress under this owner (owners are unique per attempt) with this
// fingerprint. Without the fingerprint, the holder asking with another
// input would be charged and then told ErrFingerprintMismatch.
var chargeClaimedSQL = strings.Replace(chargeSQL, "r.owner = ? AND r.generation = ?", "r.owner = ? AND r.fingerprint = ?", 1)

// Charge implements store.Ledger. The fast path is one statement; when it
// inserts nothing, one read says why.
func (s *Store) Charge(ctx context.Context, p store.ChargeParams) (store.ChargeResult, error) {
	if err := store.ValidateAmount(p.Amount, p.Currency); err != nil {
		return store.ChargeResult{}, err
	}
	rows, err := s.db.Query(ctx, chargeSQL, chargeArgs(p, p.Generation)...)
	if err != nil {
		return store.ChargeResult{}, fmt.Errorf("charge: %w", err)
	}
	return s.chargeOutcome(ctx, p, rows)
}

// quotaTakeSQL takes one unit of free quota for the key the batch's claim
// won (fenced like chargeClaimedSQL), while the caller's usage of the
// window is below the limit. It runs before chargeClaimedSQL, which then
// finds the key holding a unit and charges nothing.
const quotaTakeSQL = `INSERT INTO quota_entries (caller, tool, window_start, kind, reference, idem_key, incarnation,
	used_after, created_at)
SELECT ?, ?, ?, 'take', 'take:' || r.key || ':' || r.incarnation || ':' || (r.quota_count + 1), r.key, r.incarnation,
	coalesce((SELECT used FROM quota_usage WHERE caller = ? AND tool = ? AND window_start = ?), 0) + 1, ?
FROM idem_records r
WHERE r.key = ? AND r.owner = ? AND r.fingerprint = ? AND r.status = 'in_progress'
	AND r.quota_state <> 'taken' AND r.charge_state <> 'charged'
	AND coalesce((SELECT used FROM quota_usage WHERE caller = ? AND tool = ? AND window_start = ?), 0) < ?
RETURNING used_after`

// quotaReturnSQL gives back the unit of free quota the fence's key holds,
// to the window it was taken from.
const quotaReturnSQL = `INSERT INTO quota_entries (caller, tool, window_start, kind, reference, idem_key, incarnation,
	used_after, created_at)
SELECT q.caller, q.tool, q.window_start, 'return', 'return:' || r.key || ':' || r.incarnation || ':' || r.quota_count,
	r.key, r.incarnation, q.used - 1, ?
FROM idem_records r JOIN quota_usage q ON q.caller = r.caller AND q.tool = r.tool AND q.window_start = r.quota_window
WHERE r.key = ? AND r.owner = ? AND r.generation = ? AND r.status = 'in_progress' AND r.quota_state = 'taken'
RETURNING used_after`

// ClaimCharge implements store.Store. With a Batcher it is one round trip:
// claimSQL, quotaTakeSQL when p.Quota is set, and chargeClaimedSQL when
// p.Amount is positive, in one atomic batch, so the take and the charge
// see exactly the row the claim left, and change nothing unless that claim
// was won. Otherwise it is Claim, then Charge if the claim was won; with a
// quota, the same statements one by one (each fenced by the claim's owner
// and fingerprint, so a takeover in between fences the rest out).
func (s *Store) ClaimCharge(ctx context.Context, p store.ClaimChargeParams) (store.ClaimChargeResult, error) {
	if err := store.ValidateClaim(&p.ClaimParams); err != nil {
		return store.ClaimChargeResult{}, err
	}
	if p.Quota != nil {
		if err := store.ValidateQuota(p); err != nil {
			return store.ClaimChargeResult{}, err
		}
	}
	if p.Quota == nil || p.Amount != 0 {
		if err := store.ValidateAmount(p.Amount, p.Currency); err != nil {
			return store.ClaimChargeResult{}, err
		}
	}
	_, batcher := store.BatcherOf(s.db)
	if !batcher && p.Quota == nil {
		return store.ClaimThenCharge(ctx, s, p)
	}
	now := store.UnixMilli(p.Now)
	stmts := []store.Stmt{{Query: claimSQL, Args: claimArgs(p.ClaimParams)}}
	if q := p.Quota; q != nil {
		w := store.UnixMilli(q.Window)
		stmts = append(stmts, store.Stmt{Query: quotaTakeSQL, Args: []any{p.Caller, p.Tool, w, p.Caller, p.Tool, w, now,
			p.Key, p.Owner, p.Fingerprint, p.Caller, p.Tool, w, q.Limit}})
	}
	cp := store.ChargeParams{Fence: store.Fence{Key: p.Key, Owner: p.Owner}, Caller: p.Caller, Currency: p.Currency,
		Amount: p.Amount, Now: p.Now, KeyID: p.KeyID, Hold: p.Hold}
	if p.Amount > 0 {
		stmts = append(stmts, store.Stmt{Query: chargeClaimedSQL, Args: chargeArgs(cp, p.Fingerprint)})
	}
	var out [][][]any
	var err error
	if batcher {
		out, err = s.batchOrEach(ctx, stmts)
	} else {
		// One by one: the take and the charge only after a won claim.
		out = make([][][]any, len(stmts))
		out[0], err = s.db.Query(ctx, stmts[0].Query, stmts[0].Args...)
		if err == nil && len(out[0]) == 1 && asString(out[0][0][2]) == p.Owner && asString(out[0][0][1]) == string(store.StatusInProgress) {
			for i := 1; i < len(stmts) && err == nil; i++ {
				out[i], err = s.db.Query(ctx, stmts[i].Query, stmts[i].Args...)
			}
		}
	}
	if err != nil {
		return store.ClaimChargeResult{}, fmt.Errorf("claim and charge: %w", err)
	}
	cr, err := claimOutcome(p.ClaimParams, out[0])
	if err != nil {
		return store.ClaimChargeResult{}, err
	}
	res := store.ClaimChargeResult{ClaimResult: cr}
	if cr.Outcome != store.OutcomeClaimed {
		for _, rows := range out[1:] {
			if len(rows) != 0 {
				// Cannot happen: the take's and the charge's WHERE hold only for the winner.
				return res, fmt.Errorf("claim and charge: charged a claim that was not won (%s)", cr.Outcome)
			}
		}
		return res, nil
	}
	if p.Quota != nil {
		switch {
		case len(out[1]) == 1:
			res.Quota = store.QuotaResult{Free: true, Used: asInt64(out[1][0][0])}
		case cr.Record.Quota == store.QuotaTaken:
			res.Quota.Free = true // inherited from the attempt taken over
		}
		if res.Quota.Free {
			return res, nil
		}
		if p.Amount == 0 {
			res.ChargeErr = store.ErrQuotaExhausted
			return res, nil
		}
	}
	cp.Generation = cr.Record.Generation
	res.Charge, res.ChargeErr = s.chargeOutcome(ctx, cp, out[len(out)-1])
	return res, nil
}

// chargeOutcome reads a charge statement's returned rows: the new balance,
// or, when nothing was inserted, one read that says why.
func (s *Store) chargeOutcome(ctx context.Context, p store.ChargeParams, rows [][]any) (store.ChargeResult, error) {
	if len(rows) == 1 {
		return store.ChargeResult{Charged: true, Balance: asInt64(rows[0][0])}, nil
	}
	// Nothing inserted: fenced out, already charged, or not enough money.
	st, err := s.fenceState(ctx, p.Fence, p.Caller, p.Currency)
	if err != nil {
		return store.ChargeResult{}, fmt.Errorf("charge: %w", err)
	}
	switch {
	case !st.holds || st.status != store.StatusInProgress:
		return store.ChargeResult{}, store.ErrFencedOut
	case st.charge == store.ChargeCharged, st.quota == store.QuotaTaken:
		return store.ChargeResult{Charged: false, Balance: st.balance}, nil
	}
	ife := &store.InsufficientFundsError{Currency: p.Currency, Balance: st.balance, Required: p.Amount, Owed: st.owed}
	if ife.Cap, err = s.capPassed(ctx, p); err != nil {
		return store.ChargeResult{}, fmt.Errorf("charge: %w", err)
	}
	return store.ChargeResult{}, ife
}

const refundSQL = `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key,
	incarnation, generation, balance_after, created_at)
SELECT r.charge_caller, r.charge_currency, r.charge_amount, 'refund', 'refund:' || r.key || ':' || r.incarnation || ':' || r.charge_count,
	r.key, r.incarnation, r.generation,
	coalesce((SELECT balance FROM balances WHERE caller = r.charge_caller AND currency = r.charge_currency), 0) + r.charge_amount, ?
FROM idem_records r
WHERE r.key = ? AND r.owner = ? AND r.generation = ? AND r.status = 'in_progress' AND r.charge_state = 'charged'
RETURNING balance_after, caller, currency`

// Refund implements store.Ledger: the refund and the quota's return are
// one batch on a Batcher; otherwise the return runs only when the refund
// found no charge (a key holds a charge or a unit, never both).
func (s *Store) Refund(ctx context.Context, f store.Fence, now time.Time) (bool, int64, error) {
	t := store.UnixMilli(now)
	stmts := []store.Stmt{
		{Query: refundSQL, Args: []any{t, f.Key, f.Owner, f.Generation}},
		{Query: quotaReturnSQL, Args: []any{t, f.Key, f.Owner, f.Generation}},
	}
	var out [][][]any
	var err error
	if _, ok := store.BatcherOf(s.db); ok {
		out, err = s.batchOrEach(ctx, stmts)
	} else {
		out = make([][][]any, 2)
		out[0], err = s.db.Query(ctx, stmts[0].Query, stmts[0].Args...)
		if err == nil && len(out[0]) == 0 {
			out[1], err = s.db.Query(ctx, stmts[1].Query, stmts[1].Args...)
		}
	}
	if err != nil {
		return false, 0, fmt.Errorf("refund: %w", err)
	}
	if len(out[0]) == 1 {
		return true, asInt64(out[0][0][0]), nil
	}
	if len(out[1]) == 1 {
		return true, 0, nil
	}
	st, err := s.fenceState(ctx, f, "", "")
	if err != nil {
		return false, 0, fmt.Errorf("refund: %w", err)
	}
	if !st.holds || st.status != store.StatusInProgress {
		return false, 0, store.ErrFencedOut
	}
	return false, st.balance, nil
}

type fenceState struct {
	holds   bool
	status  store.Status
	charge  store.ChargeState
	quota   store.QuotaState
	balance int64
	owed    int64
}

// fenceState reads whether f holds its record, the record's charge state,
// and a balance: of (caller, currency) if given, else of the charged caller.
func (s *Store) fenceState(ctx context.Context, f store.Fence, caller, currency string) (fenceState, error) {
	rows, err := s.db.Query(ctx, `SELECT r.owner = ? AND r.generation = ?, r.status, r.charge_state,
		coalesce(b.balance, 0), coalesce(b.owed, 0), r.quota_state
		FROM (SELECT 1) LEFT JOIN idem_records r ON r.key = ?
		LEFT JOIN balances b ON b.caller = coalesce(nullif(?, ''), r.charge_caller) AND b.currency = coalesce(nullif(?, ''), r.charge_currency)`,
		f.Owner, f.Generation, f.Key, caller, currency)
	if err != nil {
		return fenceState{}, err
	}
	if len(rows) != 1 {
		return fenceState{}, fmt.Errorf("read fence: %d rows", len(rows))
	}
	r := rows[0]
	return fenceState{
		holds:   asInt64(r[0]) == 1,
		status:  store.Status(asString(r[1])),
		charge:  store.ChargeState(asString(r[2])),
		balance: asInt64(r[3]),
		owed:    asInt64(r[4]),
		quota:   store.QuotaState(asString(r[5])),
	}, nil
}

const creditSQL = `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, balance_after, created_at)
SELECT ?, ?, ?, 'credit', ?,
	coalesce((SELECT balance FROM balances WHERE caller = ? AND currency = ?), 0) + ?, ?
WHERE NOT EXISTS (SELECT 1 FROM ledger_entries WHERE reference = ?)
RETURNING balance_after`

// creditRepaySQL pays the caller's debt from a credit just made, once: only
// while the credit is still the caller's latest entry in the currency (a
// repayment would follow it, and so would anything that moved the debt
// since). On a Batcher it shares the credit's batch, so "latest" means "made
// by this batch"; without one, a retried Credit whose repayment was lost
// still finds its credit latest, unless the caller's ledger moved in
// between: then the debt waits for the next credit (and charges stay
// refused until it is paid).
const creditRepaySQL = `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, owed_change, balance_after, created_at)
SELECT b.caller, b.currency, -min(b.owed, b.balance), 'repay', 'repay:' || ?, -min(b.owed, b.balance),
	b.balance - min(b.owed, b.balance), ?
FROM balances b
WHERE b.caller = ? AND b.currency = ? AND b.owed > 0 AND b.balance > 0
	AND (SELECT id FROM ledger_entries WHERE caller = b.caller AND currency = b.currency ORDER BY id DESC LIMIT 1)
		= (SELECT id FROM ledger_entries WHERE reference = ? AND caller = b.caller AND currency = b.currency)
	AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE reference = 'repay:' || ?)
RETURNING balance_after`

// Credit implements store.Ledger. The credit and the repayment of a debt
// (creditRepaySQL) are one batch on a Batcher, two statements otherwise.
func (s *Store) Credit(ctx context.Context, p store.CreditParams) (store.CreditResult, error) {
	if err := store.ValidateCredit(p); err != nil {
		return store.CreditResult{}, err
	}
	ref := "credit:" + p.Reference
	now := store.UnixMilli(p.Now)
	stmts := []store.Stmt{
		{Query: creditSQL, Args: []any{p.Caller, p.Currency, p.Amount, ref, p.Caller, p.Currency, p.Amount, now, ref}},
		{Query: creditRepaySQL, Args: []any{ref, now, p.Caller, p.Currency, ref, ref}},
	}
	out, err := s.batchOrEach(ctx, stmts)
	if err != nil && !isConstraint(err, "UNIQUE") {
		if isConstraint(err, "CHECK") {
			return store.CreditResult{}, fmt.Errorf("%w: balance would exceed %d", store.ErrInvalidAmount, store.MaxAmount)
		}
		return store.CreditResult{}, fmt.Errorf("credit: %w", err)
	}
	if err == nil && len(out[0]) == 1 {
		res := store.CreditResult{Applied: true, Balance: asInt64(out[0][0][0])}
		if len(out[1]) == 1 {
			res.Balance = asInt64(out[1][0][0])
		}
		return res, nil
	}
	// The reference exists: a repeat is fine, a different credit is not.
	rows, err := s.db.Query(ctx, `SELECT caller, currency, amount,
		coalesce((SELECT balance FROM balances WHERE caller = ? AND currency = ?), 0)
		FROM ledger_entries WHERE reference = ?`, p.Caller, p.Currency, ref)
	if err != nil {
		return store.CreditResult{}, fmt.Errorf("credit: %w", err)
	}
	if len(rows) != 1 {
		return store.CreditResult{}, fmt.Errorf("credit: reference %q neither inserted nor found", p.Reference)
	}
	r := rows[0]
	if asString(r[0]) != p.Caller || asString(r[1]) != p.Currency || asInt64(r[2]) != p.Amount {
		return store.CreditResult{}, store.ErrReferenceConflict
	}
	return store.CreditResult{Applied: false, Balance: asInt64(r[3])}, nil
}

// Balance implements store.Ledger.
func (s *Store) Balance(ctx context.Context, caller, currency string) (int64, error) {
	rows, err := s.db.Query(ctx, `SELECT balance FROM balances WHERE caller = ? AND currency = ?`, caller, currency)
	if err != nil {
		return 0, fmt.Errorf("balance: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	return asInt64(rows[0][0]), nil
}

// Entries implements store.Ledger.
func (s *Store) Entries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error) {
	rows, err := s.db.Query(ctx, `SELECT caller, currency, amount, kind, reference, coalesce(idem_key, ''),
		balance_after, created_at, coalesce(topup_id, ''), owed_change FROM ledger_entries
		WHERE (? = '' OR caller = ?) AND (? = '' OR idem_key = ?) ORDER BY id`,
		f.Caller, f.Caller, f.Key, f.Key)
	if err != nil {
		return nil, fmt.Errorf("entries: %w", err)
	}
	out := make([]store.Entry, 0, len(rows))
	for _, r := range rows {
		out = append(out, store.Entry{
			Caller:       asString(r[0]),
			Currency:     asString(r[1]),
			Amount:       asInt64(r[2]),
			Kind:         asString(r[3]),
			Reference:    asString(r[4]),
			Key:          asString(r[5]),
			BalanceAfter: asInt64(r[6]),
			CreatedAt:    store.FromUnixMilli(asInt64(r[7])),
			Topup:        asString(r[8]),
			Owed:         asInt64(r[9]),
		})
	}
	return out, nil
}

// CreateCaller implements store.Callers.
func (s *Store) CreateCaller(ctx context.Context, c store.Caller) error {
	if c.ID == "" || len(c.KeyHash) == 0 {
		return fmt.Errorf("%w: caller id and key hash are required", store.ErrInvalidArgument)
	}
	_, err := s.db.Exec(ctx, `INSERT INTO callers (id, name, key_hash, created_at) VALUES (?, ?, ?, ?)`,
		c.ID, c.Name, hex.EncodeToString(c.KeyHash), store.UnixMilli(c.CreatedAt))
	if isConstraint(err, "UNIQUE") || isConstraint(err, "PRIMARY KEY") {
		return store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("create caller: %w", err)
	}
	return nil
}

// CallerByID implements store.Callers.
func (s *Store) CallerByID(ctx context.Context, id string) (store.Caller, error) {
	return s.caller(ctx, "id", id)
}

// caller reads the caller whose column (a constant) equals v.
func (s *Store) caller(ctx context.Context, column, v string) (store.Caller, error) {
	rows, err := s.db.Query(ctx, `SELECT id, name, key_hash, created_at FROM callers WHERE `+column+` = ?`, v)
	if err != nil {
		return store.Caller{}, fmt.Errorf("caller by %s: %w", column, err)
	}
	if len(rows) == 0 {
		return store.Caller{}, store.ErrNotFound
	}
	r := rows[0]
	kh, err := hex.DecodeString(asString(r[2]))
	if err != nil {
		return store.Caller{}, fmt.Errorf("caller by %s: decode hash: %w", column, err)
	}
	return store.Caller{ID: asString(r[0]), Name: asString(r[1]), KeyHash: kh, CreatedAt: store.FromUnixMilli(asInt64(r[3]))}, nil
}

// invariantChecks are queries that return rows only when the charge
// invariant (see package store) or the funding invariant (see
// store.Topups) is broken; each row describes a violation. The payment
// invariant's are paymentInvariantChecks.
var invariantChecks = []struct{ name, sql string }{
	{"balance equals the sum of its entries", `
		SELECT b.caller || '/' || b.currency || ': balance ' || b.balance || ' entries ' || coalesce(sum(e.amount), 0)
		FROM balances b LEFT JOIN ledger_entries e ON e.caller = b.caller AND e.currency = b.currency
		GROUP BY b.caller, b.currency HAVING b.balance <> coalesce(sum(e.amount), 0)`},
	{"owed equals the sum of its entries' owed changes", `
		SELECT b.caller || '/' || b.currency || ': owed ' || b.owed || ' entries ' || coalesce(sum(e.owed_change), 0)
		FROM balances b LEFT JOIN ledger_entries e ON e.caller = b.caller AND e.currency = b.currency
		GROUP BY b.caller, b.currency HAVING b.owed <> coalesce(sum(e.owed_change), 0) OR b.owed < 0`},
	{"owed_after is never negative", `
		SELECT reference || ': owed running ' || running FROM (
			SELECT reference, sum(owed_change) OVER (PARTITION BY caller, currency ORDER BY id) AS running
			FROM ledger_entries) WHERE running < 0`},
	{"a top-up is credited once, by its one credit entry", `
		SELECT t.caller || '/' || t.id || ': credited ' || t.credited || ' ' || t.credited_currency || ', '
			|| count(e.id) || ' credit entries of ' || coalesce(sum(e.amount), 0)
		FROM topups t LEFT JOIN ledger_entries e ON e.caller = t.caller AND e.topup_id = t.id AND e.kind = 'credit'
		GROUP BY t.caller, t.id
		HAVING count(e.id) > 1 OR t.credited <> coalesce(sum(e.amount), 0)
			OR (count(e.id) = 1 AND (t.credited_currency <> max(e.currency)
				OR max(e.reference) <> 'credit:topup:' || t.rail || ':' || t.session_id))`},
	{"a top-up's reversed is its reversal entries' sum, at most its credit", `
		SELECT t.caller || '/' || t.id || ': reversed ' || t.reversed || ' credited ' || t.credited || ' entries '
			|| coalesce(sum(e.owed_change - e.amount), 0)
		FROM topups t LEFT JOIN ledger_entries e ON e.caller = t.caller AND e.topup_id = t.id AND e.kind = 'reversal'
		GROUP BY t.caller, t.id
		HAVING t.reversed <> coalesce(sum(e.owed_change - e.amount), 0) OR t.reversed > t.credited
			OR (count(e.id) > 0 AND max(e.currency) <> t.credited_currency)`},
	{"a top-up reverses no more than its refunds and disputes ask", `
		SELECT t.caller || '/' || t.id || ': reversed ' || t.reversed || ' asked ' || coalesce(sum(r.amount), 0)
		FROM topups t LEFT JOIN topup_reversals r ON r.caller = t.caller AND r.topup_id = t.id
		GROUP BY t.caller, t.id HAVING t.reversed > coalesce(sum(r.amount), 0)`},
	{"no charge is taken while the caller owes in its currency", `
		SELECT reference || ': charged while owing ' || owed_before FROM (
			SELECT reference, kind, coalesce(sum(owed_change) OVER (PARTITION BY caller, currency ORDER BY id
				ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS owed_before
			FROM ledger_entries) WHERE kind = 'charge' AND owed_before > 0`},
	{"a top-up is credited or refunded exactly when it holds a credit", `
		SELECT caller || '/' || id || ': ' || status || ' credited ' || credited || ' reversed ' || reversed FROM topups
		WHERE (status IN ('credited', 'refunded')) <> (credited > 0) OR (status = 'refunded') <> (reversed > 0)`},
	{"a repayment moves money from the balance to the debt", `
		SELECT reference FROM ledger_entries WHERE kind = 'repay' AND (amount >= 0 OR owed_change <> amount)`},
	{"a top-up's entries name an existing top-up", `
		SELECT e.reference FROM ledger_entries e
		WHERE (e.kind = 'reversal' OR e.topup_id IS NOT NULL)
			AND NOT EXISTS (SELECT 1 FROM topups t WHERE t.caller = e.caller AND t.id = e.topup_id)`},
	{"every entry has a balance", `
		SELECT e.caller || '/' || e.currency FROM ledger_entries e
		WHERE NOT EXISTS (SELECT 1 FROM balances b WHERE b.caller = e.caller AND b.currency = e.currency) LIMIT 1`},
	{"balance_after is the running sum", `
		SELECT reference || ': balance_after ' || balance_after || ' running ' || running FROM (
			SELECT reference, balance_after, sum(amount) OVER (PARTITION BY caller, currency ORDER BY id) AS running
			FROM ledger_entries) WHERE balance_after <> running OR running < 0`},
	{"per key, charges and refunds alternate (net at most one price)", `
		SELECT idem_key || ' (' || incarnation || '): ' || sum(kind = 'charge') || ' charges, ' || sum(kind = 'refund') || ' refunds'
		FROM ledger_entries WHERE kind IN ('charge', 'refund') GROUP BY idem_key, incarnation
		HAVING sum(kind = 'charge') - sum(kind = 'refund') NOT IN (0, 1)
			OR max(abs(amount)) <> min(abs(amount))`},
	{"a record's charge state matches its entries", `
		SELECT r.key || ': state ' || r.charge_state || ' net ' || coalesce(-sum(e.amount), 0)
		FROM idem_records r LEFT JOIN ledger_entries e ON e.idem_key = r.key AND e.incarnation = r.incarnation
		GROUP BY r.key
		HAVING (r.charge_state = 'charged' AND coalesce(-sum(e.amount), 0) <> r.charge_amount)
			OR (r.charge_state <> 'charged' AND coalesce(sum(e.amount), 0) <> 0)`},
	{"a stored 2xx answer was not refunded", `
		SELECT key FROM idem_records
		WHERE status = 'completed' AND resp_status BETWEEN 200 AND 299 AND charge_state = 'refunded'`},
	// The hold invariant (store/holds.go, 23-25).
	{"a hold captures at most its maximum, which its charge entry held", `
		SELECT r.key || ': ' || r.hold_state || ' amount ' || r.charge_amount || ' max ' || r.hold_max || ' held '
			|| coalesce(-e.amount, 0)
		FROM idem_records r LEFT JOIN ledger_entries e
			ON e.reference = 'charge:' || r.key || ':' || r.incarnation || ':' || r.charge_count
		WHERE r.hold_state <> 'none' AND r.charge_state = 'charged'
			AND (r.charge_amount > r.hold_max OR e.hold IS NOT 1 OR -e.amount <> r.hold_max)`},
	{"a release gives back part of one hold, once", `
		SELECT rl.reference || ': released ' || rl.amount || ' of ' || coalesce(-ch.amount, 0)
		FROM ledger_entries rl LEFT JOIN ledger_entries ch ON ch.reference = 'charge:' || substr(rl.reference, 9)
		WHERE rl.kind = 'release' AND (ch.id IS NULL OR ch.hold <> 1 OR rl.amount > -ch.amount
			OR ch.idem_key <> rl.idem_key OR ch.caller <> rl.caller OR ch.currency <> rl.currency
			OR ch.key_id <> rl.key_id)`},
	{"a captured hold keeps what its Complete captured", `
		SELECT key || ': amount ' || charge_amount || ' capture ' || coalesce(hold_capture, 'all') || ' max ' || hold_max
		FROM idem_records WHERE hold_state = 'captured' AND charge_state = 'charged'
			AND charge_amount <> min(coalesce(hold_capture, hold_max), hold_max)`},
	{"a completed key holds no open hold", `
		SELECT key FROM idem_records WHERE status = 'completed' AND charge_state = 'charged' AND hold_state = 'held'`},
}

// CheckInvariants implements store.Store.
func (s *Store) CheckInvariants(ctx context.Context) error {
	var errs []error
	for _, c := range slices.Concat(invariantChecks, paymentInvariantChecks, keyInvariantChecks, quotaInvariantChecks, capInvariantChecks) {
		rows, err := s.db.Query(ctx, c.sql)
		if err != nil {
			return fmt.Errorf("check %q: %w", c.name, err)
		}
		for _, r := range rows {
			errs = append(errs, fmt.Errorf("invariant %q broken: %s", c.name, asString(r[0])))
		}
	}
	return errors.Join(errs...)
}

// isConstraint reports whether err is a constraint failure of the given
// kind. Engines only share the SQLite message text ("UNIQUE constraint
// failed", "CHECK constraint failed").
func isConstraint(err error, kind string) bool {
	return err != nil && strings.Contains(err.Error(), kind+" constraint failed")
}
