package store

import (
	"context"
	"fmt"
	"time"
)

// # Per-call payments: x402
//
// A call paid per request with x402 carries a signed payment (an EIP-3009
// authorization) instead of drawing on a prepaid balance. The payment can
// be settled on chain only once and never refunded, so it is bound to the
// key it pays for and settled only after the key's execution succeeded.
//
// The payer's address is the caller: keys, payments and the credit-back
// balance are scoped by Caller = "x402:" + lower-case address, like a
// prepaid caller's rows, so a later shard-by-caller needs no redesign.
//
// The payment invariant, which CheckInvariants verifies next to the charge
// and funding invariants:
//
//  12. one payment pays for one key: a payment (Caller, Ref) is bound to
//     exactly one key, for ever (a uniqueness constraint): the same signed
//     payment presented under another key is ErrPaymentReused and never
//     claims it;
//  13. a key holds at most one payment per incarnation (the record's
//     PaymentRef), and a payment's state moves only forwards: verified →
//     settlement_pending → settled | settlement_failed, and settled or
//     settlement_pending → credited_back; not_charged when the key's
//     execution failed before a settle was attempted (nothing moved, the
//     same payment may be retried);
//  14. settled or credited_back is the only state in which money moved,
//     and a payment is settled at most once (the facilitator and the chain
//     also refuse a second settle of one nonce);
//  15. a settled payment's key is completed with a 2xx answer (the action
//     was delivered) or, if our side failed after the settle, the payment
//     is credited_back: one credit entry of its Amount in its Currency to
//     the payer's prepaid balance, reference PaymentCreditReference(ref)
//     ("credit:x402:<ref>", which no admin Credit can take), never two;
//  16. a 2xx answer of a key that holds a payment was stored only with the
//     payment settled, settlement_pending (a settle whose outcome is not
//     known yet, queued), or settlement_failed after delivery (a loss,
//     recorded with its reason).
//
// How the backends keep it:
//
//   - A claim that does not take the presented payment (the key is
//     completed or in flight under another payment, or the fingerprint
//     differs) leaves it unbound: the bind is undone in the same atomic
//     step. A payment bound to this key in a state in which nothing moved
//     (verified, not_charged, or settlement_failed before any answer was
//     delivered) may be presented again under this key; one that moved or
//     may have moved money only replays, or is kept by a takeover while
//     settlement_pending, and is otherwise ErrPaymentReused.
//   - A takeover that rebinds the key to another payment releases the
//     verified one it replaces as not_charged (MarkSettling comes before
//     any settle, so a verified payment never moved money).
//   - A claim does not treat a record as fresh (TTL expired) while it is
//     unfinished and holds a settlement_pending payment: the same request
//     takes it over with that payment, as with an open charge.
//   - Sweep fails an abandoned record as usual; its settlement_pending
//     payment stays pending and due (MarkSettling makes it due at once,
//     and the reconciler's queue leaves out only payments whose key is held
//     under a live lease). Sweep releases the verified payments of failed
//     records as not_charged, and deletes a record with a payment only
//     once that payment is final (not_charged, settled, settlement_failed,
//     credited_back). Payments themselves are kept for ever.

// PaymentState is what happened to a per-call payment.
type PaymentState string

// Payment states.
const (
	PaymentNotCharged   PaymentState = "not_charged"
	PaymentVerified     PaymentState = "verified"
	PaymentPending      PaymentState = "settlement_pending"
	PaymentSettled      PaymentState = "settled"
	PaymentFailed       PaymentState = "settlement_failed"
	PaymentCreditedBack PaymentState = "credited_back"
)

// Payment is a per-call payment bound to an idempotency key.
type Payment struct {
	Caller string // "x402:" + the payer's lower-case address
	// Ref identifies the signed payment: what the chain refuses a second
	// settle by (network, asset, payer and nonce).
	Ref string
	Key string // the scoped idempotency key it pays for
	// Rail is "x402".
	Rail    string
	Network string
	// Amount is what the payment pays, in minor units of Currency (an
	// x402 asset's atomic units: USDC has 6 decimals).
	Amount   int64
	Currency string
	State    PaymentState
	// Payload and Requirements are the signed payment and what it was
	// matched to (JSON), kept so that a pending settle can be retried with
	// the same payment until ValidBefore.
	Payload      []byte
	Requirements []byte
	ValidBefore  time.Time
	// Transaction is the settle's transaction hash; "" until settled (and
	// for a payment found settled without one).
	Transaction string
	// Reason is the facilitator's reason of a failed settle or verify.
	Reason string
	// Delivered reports whether the key's answer was stored for the caller
	// with this payment (CompletePaid): a settle that then fails
	// definitively is a loss, and a pending settle that succeeds is not
	// credited back.
	Delivered bool
	// Attempts counts the reconciler's settle attempts (ResolvePayment);
	// NextAttemptAt is when a pending settle is due again (MarkSettling
	// makes it due at once: the queue skips it while its key is held under
	// a live lease).
	Attempts      int
	NextAttemptAt time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// ClaimPaymentParams are the arguments of ClaimPayment.
type ClaimPaymentParams struct {
	ClaimParams
	// Payment is the payment presented with this request (Caller, Ref,
	// Rail, Network, Amount, Currency, Payload, Requirements, ValidBefore).
	Payment Payment
}

// ClaimPaymentResult is the claim's result and the payment the key holds
// after it.
type ClaimPaymentResult struct {
	ClaimResult
	// Payment is the key's payment as it stands: for OutcomeClaimed the
	// presented one (state verified: the caller must verify it with the
	// facilitator before executing, and Fail with PaymentNotCharged if that
	// fails), for a completed or in-progress key the one bound to it, which
	// may be another payment than the one presented.
	Payment Payment
}

// PaymentOutcome is what a settle attempt said.
type PaymentOutcome struct {
	State       PaymentState // settled, settlement_pending or settlement_failed
	Transaction string
	Reason      string
}

// Payments binds per-call payments to keys and records their settlement.
type Payments interface {
	// ClaimPayment is Claim with p.Payment bound to p.Key in the same
	// atomic step: a payment (Caller, Ref) bound to another key returns
	// ErrPaymentReused and changes nothing. The claim's own errors are as
	// Claim's. A key that is won (a fresh claim, or a takeover of a failed
	// or abandoned attempt) holds the presented payment, state verified;
	// a takeover whose payment is settlement_pending keeps it (the earlier
	// settle may have moved the money: the engine executes again and
	// settles the same payment, which counts once).
	ClaimPayment(ctx context.Context, p ClaimPaymentParams) (ClaimPaymentResult, error)
	// MarkSettling records, before the settle is sent, that the key's
	// payment ref is being settled (settlement_pending, due at once): from
	// then on a crash leaves a payment whose outcome the reconciler must
	// establish. It is a no-op on a payment already pending (a takeover
	// that kept it). ErrFencedOut unless f holds the key in progress with
	// that payment, verified or pending.
	MarkSettling(ctx context.Context, f Fence, ref string, now time.Time) error
	// CompletePaid is Complete and the settle's outcome in one atomic
	// step: settled (with the transaction), settlement_pending (queued for
	// the reconciler; Delivered set) or settlement_failed after delivery (a
	// loss). ErrFencedOut unless f holds the key in progress with payment
	// ref, verified or pending (a retry after a lost reply whose payment
	// already carries out completes the record); ErrInvalidArgument for
	// another state or a response that is not 2xx (a settle follows only
	// success); ErrTooLarge as Complete.
	CompletePaid(ctx context.Context, p CompleteParams, ref string, out PaymentOutcome) error
	// FailPaid is Fail and the payment's state in one atomic step:
	// not_charged (the execution failed before a settle: nothing moved,
	// the payment may be retried), or settlement_failed with the reason
	// (the settle was refused: nothing moved). A payment already
	// settlement_pending stays pending, due at once, with not_charged (the
	// earlier settle may have moved money: the reconciler settles it and,
	// the key holding no 2xx answer, credits it back). ErrFencedOut unless f
	// holds the key in progress with payment ref; ErrInvalidArgument for
	// another state.
	FailPaid(ctx context.Context, f Fence, reason string, ref string, out PaymentOutcome, now time.Time) error
	// DuePayments returns at most limit payments in settlement_pending
	// whose NextAttemptAt has come, earliest due first, leaving out those
	// whose key is held in progress under a live lease (their owner
	// settles them): the reconciler's queue. It is the one read across
	// callers. ErrInvalidArgument for limit <= 0.
	DuePayments(ctx context.Context, now time.Time, limit int) ([]Payment, error)
	// ResolvePayment records a reconciler's settle attempt for a pending
	// payment, in one atomic step: settled; or, when the key holds no
	// stored 2xx answer (our side failed after the settle), settled money
	// is credited back (credit entry "x402:<ref>", state credited_back);
	// settlement_failed with the reason (a loss if Delivered); or, for
	// out.State settlement_pending, another attempt at next. A payment no
	// longer pending, or whose key is held in progress under a live lease,
	// is left as it is (returned unchanged). A credit-back fails the key's
	// record first if it is still in progress (its lease expired), so its
	// stale owner is fenced out before the money comes back. ErrNotFound
	// for an unknown payment, ErrInvalidArgument for another out.State.
	// Attempts counts each call that found the payment pending.
	ResolvePayment(ctx context.Context, caller, ref string, out PaymentOutcome, next, now time.Time) (Payment, error)
	// Losses returns at most limit payments whose answer was delivered and
	// whose settle then failed (settlement_failed, delivered): the
	// publisher's recorded losses, newest first. Like DuePayments, it reads
	// across callers (the admin's view).
	Losses(ctx context.Context, limit int) ([]Payment, error)
	// PaymentByRef returns a payment, or ErrNotFound.
	PaymentByRef(ctx context.Context, caller, ref string) (Payment, error)
	// PaymentsByKey returns the payments bound to key, oldest first.
	PaymentsByKey(ctx context.Context, key string) ([]Payment, error)
}

// PaymentCreditReference is the ledger reference of a payment's
// credit-back entry: "credit:x402:" + ref, the "credit:" prefix every
// credit carries and a namespace ValidateCredit refuses to admin credits,
// so that an admin credit can never take it and a payment is credited back
// at most once. ref names the payer (see Payment.Ref), so it is unique
// across callers.
func PaymentCreditReference(ref string) string { return "credit:x402:" + ref }

// ValidatePayment checks the payment presented to ClaimPayment: caller,
// ref, rail, network and payload are required, and the amount must be
// valid in its currency (ErrInvalidAmount, ErrUnknownCurrency).
func ValidatePayment(p Payment) error {
	if err := ValidateAmount(p.Amount, p.Currency); err != nil {
		return err
	}
	if p.Caller == "" || p.Ref == "" || p.Rail == "" || p.Network == "" || len(p.Payload) == 0 {
		return fmt.Errorf("%w: payment caller, ref, rail, network and payload are required", ErrInvalidArgument)
	}
	return nil
}

// ValidPaymentOutcome returns ErrInvalidArgument unless out.State is one
// of allowed.
func ValidPaymentOutcome(out PaymentOutcome, allowed ...PaymentState) error {
	for _, a := range allowed {
		if out.State == a {
			return nil
		}
	}
	return fmt.Errorf("%w: payment outcome %q, want one of %v", ErrInvalidArgument, out.State, allowed)
}

// PaymentFinal reports whether a payment's state is final for its key's
// record: nothing more will move (not_charged, settled, settlement_failed,
// credited_back), so Sweep may delete the record.
func PaymentFinal(s PaymentState) bool {
	return s == PaymentNotCharged || s == PaymentSettled || s == PaymentFailed || s == PaymentCreditedBack
}
