package sqlstore

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// # Funding in SQL
//
// A rail event is a list of statements (eventStmts), each idempotent on its
// own and each guarded by "this top-up exists, the event agrees with it, and
// the event id is not recorded yet"; the event row is written last. With a
// store.Batcher (D1, SQLite) the list is one atomic batch. Without one
// (libSQL over HTTP) the statements run one by one in the same order: a
// crash midway leaves the event unrecorded, the rail delivers it again, and
// the statements already run change nothing the second time, so the two
// runs converge on one application. What makes each step idempotent:
//
//   - the credit's reference names the rail payment (credit:topup:<rail>:<session>);
//   - the repay after a credit runs only while the top-up's credited is
//     still 0, and its reference derives from the credit's;
//   - the reversal is computed from the ledger itself (target minus what
//     the top-up's reversal entries already hold), and its reference names
//     its target, which only grows;
//   - topups.credited and topups.reversed are set from the entries.
//
// Statements are written with named parameters ($caller) that named()
// turns into positional ones, because the same value appears many times.

var paramName = regexp.MustCompile(`\$[a-z_]+`)

// named rewrites $name parameters of query as ? and returns the arguments
// in order. It panics on a name missing from args: a programming error.
func named(query string, args map[string]any) store.Stmt {
	var out []any
	q := paramName.ReplaceAllStringFunc(query, func(m string) string {
		v, ok := args[m[1:]]
		if !ok {
			panic("sqlstore: no value for parameter " + m)
		}
		out = append(out, v)
		return "?"
	})
	return store.Stmt{Query: q, Args: out}
}

// batchOrEach runs stmts in one atomic batch on a Batcher, else one by one
// in order, and returns each statement's rows.
func (s *Store) batchOrEach(ctx context.Context, stmts []store.Stmt) ([][][]any, error) {
	if b, ok := store.BatcherOf(s.db); ok {
		out, err := b.Batch(ctx, stmts)
		if err == nil && len(out) != len(stmts) {
			err = fmt.Errorf("batch: got %d results, want %d", len(out), len(stmts))
		}
		return out, err
	}
	out := make([][][]any, len(stmts))
	for i, st := range stmts {
		rows, err := s.db.Query(ctx, st.Query, st.Args...)
		if err != nil {
			return nil, err
		}
		out[i] = rows
	}
	return out, nil
}

const topupCols = `caller, id, rail, idem_key, fingerprint, amount, currency, status, session_id, url,
	payment_intent, credited, credited_currency, reversed, created_at, updated_at`

// topupColsOfT is topupCols of the table aliased t.
var topupColsOfT = "t." + regexp.MustCompile(`,\s*`).ReplaceAllString(topupCols, ", t.")

func scanTopup(r []any) store.Topup {
	return store.Topup{
		Caller:           asString(r[0]),
		ID:               asString(r[1]),
		Rail:             asString(r[2]),
		Key:              asString(r[3]),
		Fingerprint:      asString(r[4]),
		Amount:           asInt64(r[5]),
		Currency:         asString(r[6]),
		Status:           store.TopupStatus(asString(r[7])),
		SessionID:        asString(r[8]),
		URL:              asString(r[9]),
		PaymentIntent:    asString(r[10]),
		Credited:         asInt64(r[11]),
		CreditedCurrency: asString(r[12]),
		Reversed:         asInt64(r[13]),
		CreatedAt:        store.FromUnixMilli(asInt64(r[14])),
		UpdatedAt:        store.FromUnixMilli(asInt64(r[15])),
	}
}

// CreateTopup implements store.Topups: one INSERT that does nothing on
// either uniqueness; then one read says which.
func (s *Store) CreateTopup(ctx context.Context, t store.Topup) (store.Topup, bool, error) {
	if err := store.ValidateTopup(t); err != nil {
		return store.Topup{}, false, err
	}
	now := store.UnixMilli(t.CreatedAt)
	rows, err := s.db.Query(ctx, `INSERT INTO topups (caller, id, rail, idem_key, fingerprint, amount, currency,
		status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)
		ON CONFLICT DO NOTHING RETURNING `+topupCols,
		t.Caller, t.ID, t.Rail, t.Key, t.Fingerprint, t.Amount, t.Currency, now, now)
	if err != nil {
		return store.Topup{}, false, fmt.Errorf("create topup: %w", err)
	}
	if len(rows) == 1 {
		return scanTopup(rows[0]), true, nil
	}
	rows, err = s.db.Query(ctx, `SELECT `+topupCols+` FROM topups WHERE caller = ? AND idem_key = ?`, t.Caller, t.Key)
	if err != nil {
		return store.Topup{}, false, fmt.Errorf("create topup: %w", err)
	}
	if len(rows) == 0 {
		return store.Topup{}, false, fmt.Errorf("%w: top-up id %s is taken", store.ErrConflict, t.ID)
	}
	got := scanTopup(rows[0])
	if got.Fingerprint != t.Fingerprint {
		return store.Topup{}, false, store.ErrFingerprintMismatch
	}
	return got, false, nil
}

const routeSQL = `INSERT INTO topup_routes (rail, ref, caller, topup_id)
	SELECT rail, ref, caller, id FROM (
		SELECT rail, session_id AS ref, caller, id FROM topups WHERE caller = $caller AND id = $id
		UNION ALL
		SELECT rail, payment_intent, caller, id FROM topups WHERE caller = $caller AND id = $id)
	WHERE ref <> ''
	ON CONFLICT DO NOTHING`

// OpenTopup implements store.Topups: the update and the route in one batch
// on a Batcher; without one, the route comes second and a retried
// OpenTopup writes it again.
func (s *Store) OpenTopup(ctx context.Context, caller, id, sessionID, url string, now time.Time) (store.Topup, error) {
	if sessionID == "" {
		return store.Topup{}, fmt.Errorf("%w: session id is required", store.ErrInvalidArgument)
	}
	args := map[string]any{"caller": caller, "id": id, "session": sessionID, "url": url, "now": store.UnixMilli(now)}
	out, err := s.batchOrEach(ctx, []store.Stmt{
		named(`UPDATE topups SET session_id = $session,
			url = CASE WHEN url = '' THEN $url ELSE url END,
			status = CASE WHEN status = 'pending' THEN 'open' ELSE status END,
			updated_at = CASE WHEN session_id = '' OR status = 'pending' THEN $now ELSE updated_at END
			WHERE caller = $caller AND id = $id AND session_id IN ('', $session)`, args),
		named(routeSQL, args),
		named(`SELECT `+topupCols+` FROM topups WHERE caller = $caller AND id = $id`, args),
	})
	if err != nil {
		return store.Topup{}, fmt.Errorf("open topup: %w", err)
	}
	if len(out[2]) == 0 {
		return store.Topup{}, store.ErrNotFound
	}
	t := scanTopup(out[2][0])
	if t.SessionID != sessionID {
		return store.Topup{}, fmt.Errorf("%w: top-up %s has session %s", store.ErrConflict, id, t.SessionID)
	}
	return t, nil
}

// Topup implements store.Topups.
func (s *Store) Topup(ctx context.Context, caller, id string) (store.Topup, error) {
	rows, err := s.db.Query(ctx, `SELECT `+topupCols+` FROM topups WHERE caller = ? AND id = ?`, caller, id)
	if err != nil {
		return store.Topup{}, fmt.Errorf("topup: %w", err)
	}
	if len(rows) == 0 {
		return store.Topup{}, store.ErrNotFound
	}
	return scanTopup(rows[0]), nil
}

// TopupByPayment implements store.Topups through topup_routes, the one
// global index of funding.
func (s *Store) TopupByPayment(ctx context.Context, rail, ref string) (store.Topup, error) {
	rows, err := s.db.Query(ctx, `SELECT `+topupColsOfT+`
		FROM topup_routes r JOIN topups t ON t.caller = r.caller AND t.id = r.topup_id
		WHERE r.rail = ? AND r.ref = ?`, rail, ref)
	if err != nil {
		return store.Topup{}, fmt.Errorf("topup by payment: %w", err)
	}
	if len(rows) == 0 {
		return store.Topup{}, store.ErrNotFound
	}
	return scanTopup(rows[0]), nil
}

// Debt implements store.Topups.
func (s *Store) Debt(ctx context.Context, caller, currency string) (int64, error) {
	rows, err := s.db.Query(ctx, `SELECT owed FROM balances WHERE caller = ? AND currency = ?`, caller, currency)
	if err != nil {
		return 0, fmt.Errorf("debt: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	return asInt64(rows[0][0]), nil
}

// eventGuard holds for a top-up the event applies to (it exists, on the
// event's rail, and agrees with the event: {agrees}) and an event id not
// recorded yet. Every effect of an event carries it.
const eventGuard = `EXISTS (SELECT 1 FROM topups WHERE caller = $caller AND id = $id AND rail = $rail AND {agrees})
	AND NOT EXISTS (SELECT 1 FROM payment_events WHERE caller = $caller AND rail = $rail AND event_id = $event)`

// The agreement of an event with its top-up: a session kind names the
// recorded session (or none is recorded); a reversal is in the top-up's
// currency.
const (
	agreesSession  = `session_id IN ('', $session)`
	agreesCurrency = `coalesce(nullif(credited_currency, ''), currency) = $currency`
)

// creditEntry is the credit entry of the top-up, as the event names it.
const creditEntry = `(SELECT {col} FROM ledger_entries WHERE reference = $ref AND caller = $caller AND topup_id = $id AND kind = 'credit')`

const topupCreditSQL = `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, topup_id, owed_change, balance_after, created_at)
SELECT $caller, $currency, $amount, 'credit', $ref, $id, 0,
	coalesce((SELECT balance FROM balances WHERE caller = $caller AND currency = $currency), 0) + $amount, $now
WHERE {guard} AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE reference = $ref)
RETURNING amount`

// topupRepaySQL pays the debt from a top-up's credit, once: only while the
// top-up is not yet marked credited (the next statement marks it).
const topupRepaySQL = `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, owed_change, balance_after, created_at)
SELECT b.caller, b.currency, -min(b.owed, b.balance), 'repay', 'repay:' || $ref, -min(b.owed, b.balance),
	b.balance - min(b.owed, b.balance), $now
FROM balances b
WHERE b.caller = $caller AND b.currency = $currency AND b.owed > 0 AND b.balance > 0 AND {guard}
	AND EXISTS {credit_id}
	AND EXISTS (SELECT 1 FROM topups WHERE caller = $caller AND id = $id AND credited = 0)
	AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE reference = 'repay:' || $ref)
RETURNING -amount`

const topupPaidSQL = `UPDATE topups SET
	status = CASE WHEN status = 'refunded' THEN 'refunded' ELSE 'credited' END,
	credited = {credit_amount},
	credited_currency = {credit_currency},
	session_id = $session,
	payment_intent = CASE WHEN $intent = '' THEN payment_intent ELSE $intent END,
	updated_at = $now
WHERE caller = $caller AND id = $id AND {guard} AND EXISTS {credit_id}`

// topupMoveSQL records the session and payment of a session kind and moves
// the status forwards only: {from} lists the states it may leave.
const topupMoveSQL = `UPDATE topups SET
	status = CASE WHEN status IN ({from}) THEN $status ELSE status END,
	session_id = $session,
	payment_intent = CASE WHEN $intent = '' THEN payment_intent ELSE $intent END,
	updated_at = $now
WHERE caller = $caller AND id = $id AND {guard}`

// topupAskBackSQL records what a refund or a dispute asks back: a refund
// source keeps its largest running total, a dispute is recorded once.
const topupAskBackSQL = `INSERT INTO topup_reversals (caller, topup_id, source, kind, amount, created_at, updated_at)
SELECT $caller, $id, $source, $rkind, $amount, $now, $now WHERE {guard}
ON CONFLICT (caller, topup_id, source) DO UPDATE SET amount = excluded.amount, updated_at = excluded.updated_at
	WHERE topup_reversals.kind = 'refund' AND excluded.kind = 'refund' AND excluded.amount > topup_reversals.amount`

// reversedSum is what a top-up's reversal entries took back or recorded as
// owed; the ledger, not topups.reversed, decides what is still to reverse.
const reversedSum = `coalesce((SELECT sum(owed_change - amount) FROM ledger_entries
	WHERE caller = t.caller AND topup_id = t.id AND kind = 'reversal'), 0)`

// topupReverseSQL takes back what the top-up's sources ask beyond what was
// reversed, capped at the credit: from the balance as far as it goes, the
// rest as owed. Its reference names the target, which only grows.
const topupReverseSQL = `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, topup_id, owed_change, balance_after, created_at)
SELECT x.caller, x.cur, -min(x.target - x.done, x.bal), 'reversal', 'reversal:' || x.caller || ':' || x.id || ':' || x.target, x.id,
	x.target - x.done - min(x.target - x.done, x.bal), x.bal - min(x.target - x.done, x.bal), $now
FROM (SELECT t.caller, t.id, t.credited_currency AS cur,
		min(t.credited, (SELECT coalesce(sum(amount), 0) FROM topup_reversals WHERE caller = t.caller AND topup_id = t.id)) AS target,
		` + reversedSum + ` AS done,
		coalesce((SELECT balance FROM balances WHERE caller = t.caller AND currency = t.credited_currency), 0) AS bal
	FROM topups t WHERE t.caller = $caller AND t.id = $id) AS x
WHERE x.target > x.done AND {guard}
	AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE reference = 'reversal:' || x.caller || ':' || x.id || ':' || x.target)
RETURNING -amount, owed_change`

const topupReversedSQL = `UPDATE topups AS t SET reversed = ` + reversedSum + `, status = 'refunded', updated_at = $now
WHERE t.caller = $caller AND t.id = $id AND {guard} AND ` + reversedSum + ` > t.reversed`

// topupUnparkSQL asks back the refunds and disputes parked for the
// payment the top-up now records (ParkTopupEvent), in its currency.
const topupUnparkSQL = `INSERT INTO topup_reversals (caller, topup_id, source, kind, amount, created_at, updated_at)
SELECT t.caller, t.id, p.source, p.kind, p.amount, $now, $now
FROM topups t JOIN parked_reversals p ON p.rail = t.rail AND p.payment_ref = t.payment_intent
WHERE t.caller = $caller AND t.id = $id AND t.payment_intent <> ''
	AND p.currency = coalesce(nullif(t.credited_currency, ''), t.currency) AND {guard}
ON CONFLICT (caller, topup_id, source) DO UPDATE SET amount = excluded.amount, updated_at = excluded.updated_at
	WHERE topup_reversals.kind = 'refund' AND excluded.kind = 'refund' AND excluded.amount > topup_reversals.amount`

// ParkTopupEvent implements store.Topups.
func (s *Store) ParkTopupEvent(ctx context.Context, ev store.TopupEvent) error {
	if ev.Kind != store.TopupEventRefunded && ev.Kind != store.TopupEventDisputed {
		return fmt.Errorf("%w: only refunds and disputes are parked", store.ErrInvalidArgument)
	}
	if ev.Rail == "" || ev.PaymentIntent == "" || ev.Source == "" {
		return fmt.Errorf("%w: rail, payment and source are required", store.ErrInvalidArgument)
	}
	if err := store.ValidateAmount(ev.Amount, ev.Currency); err != nil {
		return err
	}
	kind := "refund"
	if ev.Kind == store.TopupEventDisputed {
		kind = "dispute"
	}
	now := store.UnixMilli(ev.Now)
	_, err := s.db.Exec(ctx, `INSERT INTO parked_reversals (rail, payment_ref, source, kind, amount, currency, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (rail, payment_ref, source) DO UPDATE SET amount = excluded.amount, updated_at = excluded.updated_at
			WHERE parked_reversals.kind = 'refund' AND excluded.kind = 'refund' AND excluded.amount > parked_reversals.amount`,
		ev.Rail, ev.PaymentIntent, ev.Source, kind, ev.Amount, ev.Currency, now, now)
	if err != nil {
		return fmt.Errorf("park topup event: %w", err)
	}
	return nil
}

const topupEventSQL = `INSERT INTO payment_events (caller, rail, event_id, type, topup_id, kind, created_at)
SELECT $caller, $rail, $event, $type, $id, $kind, $now
WHERE EXISTS (SELECT 1 FROM topups WHERE caller = $caller AND id = $id AND rail = $rail AND {agrees})
ON CONFLICT DO NOTHING
RETURNING 1`

const topupAfterSQL = `SELECT ` + topupCols + `,
	coalesce((SELECT balance FROM balances b WHERE b.caller = t.caller AND b.currency = {balance_currency}), 0),
	coalesce((SELECT owed FROM balances b WHERE b.caller = t.caller AND b.currency = {balance_currency}), 0),
	EXISTS (SELECT 1 FROM payment_events WHERE caller = $caller AND rail = $rail AND event_id = $event),
	{agrees}
FROM topups t WHERE t.caller = $caller AND t.id = $id`

// ApplyTopupEvent implements store.Topups; see "Funding in SQL" above.
func (s *Store) ApplyTopupEvent(ctx context.Context, ev store.TopupEvent) (store.TopupEventResult, error) {
	if err := store.ValidateTopupEvent(ev); err != nil {
		return store.TopupEventResult{}, err
	}
	ref := store.TopupCreditReference(ev.Rail, ev.SessionID)
	args := map[string]any{
		"caller": ev.Caller, "id": ev.TopupID, "rail": ev.Rail, "event": ev.EventID, "type": ev.Type,
		"kind": ev.Kind.String(), "session": ev.SessionID, "intent": ev.PaymentIntent, "amount": ev.Amount,
		"currency": ev.Currency, "source": ev.Source, "now": store.UnixMilli(ev.Now), "ref": ref,
	}
	agrees := agreesSession
	if !ev.Kind.SessionKind() {
		agrees = agreesCurrency
	}
	creditCol := func(col string) string { return replace(creditEntry, "{col}", col) }
	stmt := func(q string) store.Stmt {
		q = replace(q, "{guard}", eventGuard)
		q = replace(q, "{agrees}", agrees)
		q = replace(q, "{credit_id}", creditCol("id"))
		q = replace(q, "{credit_amount}", creditCol("amount"))
		q = replace(q, "{credit_currency}", creditCol("currency"))
		return named(q, args)
	}
	var stmts []store.Stmt
	iCredit, iRepay, iReverse := -1, -1, -1
	switch ev.Kind {
	case store.TopupEventPaid:
		iCredit, iRepay = 0, 1
		stmts = append(stmts, stmt(topupCreditSQL), stmt(topupRepaySQL), stmt(topupPaidSQL), stmt(routeSQL), stmt(topupUnparkSQL))
	case store.TopupEventProcessing:
		args["status"] = string(store.TopupProcessing)
		stmts = append(stmts, stmt(replace(topupMoveSQL, "{from}", "'pending', 'open'")), stmt(routeSQL), stmt(topupUnparkSQL))
	case store.TopupEventFailed, store.TopupEventExpired:
		args["status"] = string(store.TopupFailed)
		if ev.Kind == store.TopupEventExpired {
			args["status"] = string(store.TopupExpired)
		}
		stmts = append(stmts, stmt(replace(topupMoveSQL, "{from}", "'pending', 'open', 'processing'")), stmt(routeSQL), stmt(topupUnparkSQL))
	case store.TopupEventRefunded, store.TopupEventDisputed:
		args["rkind"] = "refund"
		if ev.Kind == store.TopupEventDisputed {
			args["rkind"] = "dispute"
		}
		stmts = append(stmts, stmt(topupAskBackSQL))
	}
	if ev.Kind == store.TopupEventPaid || !ev.Kind.SessionKind() {
		// A paid event settles reversals asked before it arrived.
		iReverse = len(stmts)
		stmts = append(stmts, stmt(topupReverseSQL), stmt(topupReversedSQL))
	}
	iEvent := len(stmts)
	stmts = append(stmts, stmt(topupEventSQL))
	// The balance and debt in the event's currency, or, for an event
	// without one, the top-up's.
	stmts = append(stmts, stmt(replace(topupAfterSQL, "{balance_currency}",
		"coalesce(nullif($currency, ''), nullif(t.credited_currency, ''), t.currency)")))

	out, err := s.batchOrEach(ctx, stmts)
	if err != nil {
		if isConstraint(err, "CHECK") {
			return store.TopupEventResult{}, fmt.Errorf("%w: balance would exceed %d", store.ErrInvalidAmount, store.MaxAmount)
		}
		return store.TopupEventResult{}, fmt.Errorf("apply topup event: %w", err)
	}
	final := out[len(out)-1]
	if len(final) == 0 {
		return store.TopupEventResult{}, store.ErrNotFound
	}
	r := final[0]
	res := store.TopupEventResult{Topup: scanTopup(r), Balance: asInt64(r[16]), Debt: asInt64(r[17])}
	recorded, agreed := asInt64(r[18]) == 1, asInt64(r[19]) == 1
	if len(out[iEvent]) == 0 {
		switch {
		case recorded:
			res.Duplicate = true
		case res.Topup.Rail != ev.Rail:
			return store.TopupEventResult{}, fmt.Errorf("%w: top-up %s is on rail %s", store.ErrConflict, ev.TopupID, res.Topup.Rail)
		case !agreed && ev.Kind.SessionKind():
			return store.TopupEventResult{}, fmt.Errorf("%w: top-up %s has session %s", store.ErrConflict, ev.TopupID, res.Topup.SessionID)
		default:
			return store.TopupEventResult{}, fmt.Errorf("%w: top-up %s is in %s, the event in %s", store.ErrConflict,
				ev.TopupID, res.Topup.Currency, ev.Currency)
		}
	}
	if iCredit >= 0 && len(out[iCredit]) == 1 {
		res.Credited = asInt64(out[iCredit][0][0])
	}
	if iRepay >= 0 && len(out[iRepay]) == 1 {
		res.Repaid = asInt64(out[iRepay][0][0])
	}
	if iReverse >= 0 && len(out[iReverse]) == 1 {
		res.Taken, res.Owed = asInt64(out[iReverse][0][0]), asInt64(out[iReverse][0][1])
	}
	return res, nil
}

func replace(s, old, new string) string { return strings.ReplaceAll(s, old, new) }
