package store

import (
	"context"
	"fmt"
	"time"
)

// # Funding: top-ups, reversals and debt
//
// Money enters a prepaid balance through Credit (an admin credit) or through
// a top-up paid on a card rail (Stripe Checkout). A top-up is a row per
// (caller, id), created before the rail is asked for a payment page, and
// moved by the rail's verified events through ApplyTopupEvent, which makes
// every change of one event in one atomic step on one caller's rows.
//
// The funding invariant, which CheckInvariants verifies next to the charge
// invariant:
//
//  7. a top-up is credited at most once, with one credit entry whose
//     reference names its rail payment (the Checkout Session), whatever
//     events arrive, in whatever order and however often: credited equals
//     that entry's amount, or 0 without one;
//  8. a rail event is applied at most once per caller (its id is recorded
//     in the same atomic step as its effects);
//  9. money taken back after a refund or a dispute is a "reversal" entry,
//     never more than what the top-up credited: reversed = Σ over the
//     top-up's reversal entries of (taken + owed) ≤ credited;
//  10. a balance never goes below zero, so the part of a reversal the
//     balance cannot cover is recorded as owed: for every (caller,
//     currency), owed = Σ of the entries' owed changes ≥ 0. A later credit
//     pays the debt first ("repay" entries, taken = owed change);
//  11. a caller who owes money in a currency is refused charges in it as
//     an insufficient balance (InsufficientFundsError.Owed > 0).

// TopupStatus is the state of a top-up.
type TopupStatus string

// Top-up states. A top-up moves pending → open → (processing →) credited →
// refunded, or ends expired or failed.
const (
	// TopupPending: stored, the rail's payment page not yet recorded.
	TopupPending TopupStatus = "pending"
	// TopupOpen: the payment page exists; the customer has not paid.
	TopupOpen TopupStatus = "open"
	// TopupProcessing: the customer completed the page with a delayed
	// payment method whose funds have not arrived (Stripe's
	// payment_status "unpaid" on checkout.session.completed).
	TopupProcessing TopupStatus = "processing"
	// TopupCredited: paid and credited to the balance.
	TopupCredited TopupStatus = "credited"
	// TopupFailed: the delayed payment failed; nothing was credited.
	TopupFailed TopupStatus = "failed"
	// TopupExpired: the payment page expired unpaid.
	TopupExpired TopupStatus = "expired"
	// TopupRefunded: some or all of the credit was taken back after a
	// refund or a dispute (Reversed says how much).
	TopupRefunded TopupStatus = "refunded"
)

// Ledger entry kinds.
const (
	EntryCredit   = "credit"   // money in: an admin credit or a top-up
	EntryCharge   = "charge"   // a paid call
	EntryRefund   = "refund"   // a paid call's charge returned
	EntryRelease  = "release"  // the unused part of a metered call's hold given back (see Holds)
	EntryReversal = "reversal" // a top-up's credit taken back (refund, dispute)
	EntryRepay    = "repay"    // a debt paid from the balance
)

// Topup is a prepaid top-up through a card rail.
type Topup struct {
	Caller      string
	ID          string // "tu_" and 32 hex digits
	Rail        string // "stripe"
	Key         string // the caller's idempotency key
	Fingerprint string // of the request that created it
	Amount      int64  // asked for, minor units of Currency
	Currency    string
	Status      TopupStatus
	// SessionID and URL are the rail's payment page (Checkout Session).
	SessionID, URL string
	// PaymentIntent is the rail's payment, known once paid.
	PaymentIntent string
	// Credited is what the top-up added to the balance (the session's
	// amount_total), 0 until credited.
	Credited int64
	// CreditedCurrency is the currency Credited is in.
	CreditedCurrency string
	// Reversed is what refunds and disputes took back, taken from the
	// balance or recorded as owed; 0 <= Reversed <= Credited.
	Reversed  int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// TopupEventKind is what a rail event means for a top-up.
type TopupEventKind int

// Event kinds.
const (
	// TopupEventPaid credits Amount of Currency (Stripe:
	// checkout.session.completed with payment_status paid, or
	// checkout.session.async_payment_succeeded).
	TopupEventPaid TopupEventKind = iota + 1
	// TopupEventProcessing: completed, the delayed payment pending.
	TopupEventProcessing
	// TopupEventFailed: the delayed payment failed.
	TopupEventFailed
	// TopupEventExpired: the page expired unpaid.
	TopupEventExpired
	// TopupEventRefunded: Amount is the total refunded so far of the
	// payment (Stripe's amount_refunded), Source the charge's id.
	TopupEventRefunded
	// TopupEventDisputed: Amount is the disputed amount, Source the
	// dispute's id.
	TopupEventDisputed
)

// String returns the kind's name.
func (k TopupEventKind) String() string {
	switch k {
	case TopupEventPaid:
		return "paid"
	case TopupEventProcessing:
		return "processing"
	case TopupEventFailed:
		return "failed"
	case TopupEventExpired:
		return "expired"
	case TopupEventRefunded:
		return "refunded"
	case TopupEventDisputed:
		return "disputed"
	}
	return "unknown"
}

// TopupEvent is one verified rail event about a caller's top-up.
type TopupEvent struct {
	Rail    string // "stripe"
	EventID string // the rail's event id: applied at most once per caller
	Type    string // the rail's event type, recorded
	Caller  string
	TopupID string
	Kind    TopupEventKind
	// SessionID names the payment page for the session kinds (paid,
	// processing, failed, expired). A top-up whose recorded session
	// differs is not changed (ErrConflict); one without a recorded session
	// records it.
	SessionID string
	// PaymentIntent is recorded with TopupEventPaid and
	// TopupEventProcessing, so that later refunds and disputes find the
	// top-up (TopupByPayment).
	PaymentIntent string
	// Amount and Currency: what was paid (TopupEventPaid), the total
	// refunded (TopupEventRefunded), or the disputed amount
	// (TopupEventDisputed).
	Amount   int64
	Currency string
	// Source is the refunded charge's or the dispute's id.
	Source string
	Now    time.Time
}

// TopupEventResult reports what ApplyTopupEvent did.
type TopupEventResult struct {
	// Duplicate is true when the event id had been applied before: nothing
	// changed.
	Duplicate bool
	Topup     Topup // as it stands after the event
	Credited  int64 // added to the balance by this event
	Repaid    int64 // of that, taken straight back to pay a debt
	Taken     int64 // taken from the balance by this event (a reversal)
	Owed      int64 // added to the debt by this event
	Balance   int64 // the balance in the event's currency after it
	Debt      int64 // what the caller owes in that currency after it
}

// Topups stores top-ups and applies rail events to them. Every method
// touches one caller's rows, except the lookups by the rail's ids, which read
// a routing index (a later shard-by-caller keeps it global).
type Topups interface {
	// CreateTopup stores t as pending unless t.Caller already has a top-up
	// under t.Key: then it returns that one with created false, or
	// ErrFingerprintMismatch, changing nothing, if its fingerprint
	// differs. It returns ErrConflict when t.ID is taken, and
	// ErrInvalidAmount or ErrUnknownCurrency for a bad amount.
	CreateTopup(ctx context.Context, t Topup) (stored Topup, created bool, err error)
	// OpenTopup records the payment page of a pending top-up and makes it
	// open. Recording the same session again is a no-op; a different one
	// is ErrConflict. A top-up past pending keeps its state. ErrNotFound if
	// the caller has no such top-up.
	OpenTopup(ctx context.Context, caller, id, sessionID, url string, now time.Time) (Topup, error)
	// Topup returns the caller's top-up, or ErrNotFound.
	Topup(ctx context.Context, caller, id string) (Topup, error)
	// TopupByPayment returns the top-up whose payment (PaymentIntent) or
	// payment page (SessionID) is ref, or ErrNotFound.
	TopupByPayment(ctx context.Context, rail, ref string) (Topup, error)
	// ApplyTopupEvent applies ev to the caller's top-up in one atomic
	// step: it records the event id (a repeat returns Duplicate and
	// changes nothing), credits or reverses, moves the debt, and updates
	// the top-up. It returns ErrNotFound when the caller has no such
	// top-up, ErrConflict when a session kind names another session than
	// the one recorded, a reversal kind another currency than the top-up's,
	// or the event another rail (nothing changed, the event not recorded),
	// ErrInvalidAmount or ErrUnknownCurrency for a bad amount, and
	// ErrInvalidArgument for a missing field (see ValidateTopupEvent). A
	// paid event credits the top-up's payment page once
	// (TopupCreditReference) and first repays any debt in its currency; a
	// reversal kind takes back min(credited, the sum of what its sources
	// asked) beyond what was reversed before; a paid event that arrives
	// after a refund settles that refund too. A paid event for a top-up already credited, a reversal
	// that adds nothing (a smaller running refund total), and a state
	// change that would go backwards (expired after paid) are recorded and
	// change nothing else.
	ApplyTopupEvent(ctx context.Context, ev TopupEvent) (TopupEventResult, error)
	// ParkTopupEvent keeps a refund or a dispute (ev names no caller or
	// top-up, but its PaymentIntent) whose payment no top-up has recorded
	// yet: it came before the session's own events were applied (say,
	// while those were failing and being redelivered). A session event
	// that records the payment (ApplyTopupEvent with that PaymentIntent)
	// then asks it back, once, as if it had come after. Parking is
	// idempotent per (rail, payment, source), a refund keeping its largest
	// running total. ErrInvalidArgument for another kind or no
	// PaymentIntent. Parked asks live in a global table keyed by the
	// rail's payment id, like the routing index.
	ParkTopupEvent(ctx context.Context, ev TopupEvent) error
	// Debt returns what the caller owes in currency, 0 if nothing.
	Debt(ctx context.Context, caller, currency string) (int64, error)
}

// SessionKind reports whether k is about the payment page (paid,
// processing, failed, expired) rather than a reversal.
func (k TopupEventKind) SessionKind() bool {
	return k >= TopupEventPaid && k <= TopupEventExpired
}

// TopupCreditReference is the reference of a top-up's credit entry: it names
// the rail's payment page, so that two events of one payment cannot credit
// twice. Admin credits may not use references that start with "topup:".
func TopupCreditReference(rail, sessionID string) string {
	return "credit:topup:" + rail + ":" + sessionID
}

// ValidateTopup checks a top-up for CreateTopup: ErrInvalidAmount or
// ErrUnknownCurrency for its amount, ErrInvalidKey for its key, and
// ErrInvalidArgument for a missing caller, id, rail or fingerprint.
func ValidateTopup(t Topup) error {
	if err := ValidateAmount(t.Amount, t.Currency); err != nil {
		return err
	}
	if err := ValidateKey(t.Key); err != nil {
		return err
	}
	if t.Caller == "" || t.ID == "" || t.Rail == "" || t.Fingerprint == "" {
		return fmt.Errorf("%w: caller, id, rail and fingerprint are required", ErrInvalidArgument)
	}
	return nil
}

// ValidateTopupEvent checks an event for ApplyTopupEvent: rail, event id,
// caller, top-up and a known kind are required, a session kind needs its
// session, a reversal kind its source, and paid and reversal kinds a valid
// amount (ErrInvalidAmount, ErrUnknownCurrency).
func ValidateTopupEvent(ev TopupEvent) error {
	if ev.Rail == "" || ev.EventID == "" || ev.Caller == "" || ev.TopupID == "" {
		return fmt.Errorf("%w: rail, event id, caller and top-up are required", ErrInvalidArgument)
	}
	switch {
	case ev.Kind.String() == "unknown":
		return fmt.Errorf("%w: event kind %d", ErrInvalidArgument, ev.Kind)
	case ev.Kind.SessionKind() && ev.SessionID == "":
		return fmt.Errorf("%w: a %s event needs its session", ErrInvalidArgument, ev.Kind)
	case !ev.Kind.SessionKind() && ev.Source == "":
		return fmt.Errorf("%w: a %s event needs its source", ErrInvalidArgument, ev.Kind)
	}
	if ev.Kind == TopupEventPaid || !ev.Kind.SessionKind() {
		return ValidateAmount(ev.Amount, ev.Currency)
	}
	return nil
}
