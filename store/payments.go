package store

import (
	"context"
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
//     the payer's prepaid balance, reference "x402:<ref>", never two;
//  16. a 2xx answer of a key that holds a payment was stored only with the
//     payment settled, settlement_pending (a settle whose outcome is not
//     known yet, queued), or settlement_failed after delivery (a loss,
//     recorded with its reason).

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
	// Delivered reports whether the key's answer was given to the caller
	// while the settle's outcome was pending: a settle that then fails
	// definitively is a loss.
	Delivered bool
	// Attempts counts settle attempts; NextAttemptAt is when a pending
	// settle is due again.
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
	// payment ref is being settled (settlement_pending): from then on a
	// crash leaves a payment whose outcome the reconciler must establish.
	// ErrFencedOut unless f holds the key in progress with that payment.
	MarkSettling(ctx context.Context, f Fence, ref string, now time.Time) error
	// CompletePaid is Complete and the settle's outcome in one atomic
	// step: settled (with the transaction), settlement_pending (queued for
	// the reconciler; Delivered set) or settlement_failed after delivery (a
	// loss). ErrFencedOut unless f holds the key.
	CompletePaid(ctx context.Context, p CompleteParams, ref string, out PaymentOutcome) error
	// FailPaid is Fail and the payment's state in one atomic step:
	// not_charged (the execution failed before a settle: nothing moved,
	// the payment may be retried), or settlement_failed with the reason
	// (the settle was refused: nothing moved). ErrFencedOut unless f holds
	// the key.
	FailPaid(ctx context.Context, f Fence, reason string, ref string, out PaymentOutcome, now time.Time) error
	// DuePayments returns at most limit payments in settlement_pending
	// whose NextAttemptAt has come, oldest first: the reconciler's queue.
	DuePayments(ctx context.Context, now time.Time, limit int) ([]Payment, error)
	// ResolvePayment records a reconciler's settle attempt for a pending
	// payment, in one atomic step: settled; or, when the key holds no
	// stored 2xx answer (our side failed after the settle), settled money
	// is credited back (credit entry "x402:<ref>", state credited_back);
	// settlement_failed with the reason (a loss if Delivered); or, for
	// out.State settlement_pending, another attempt at next. A payment no
	// longer pending is left as it is (returned unchanged).
	ResolvePayment(ctx context.Context, caller, ref string, out PaymentOutcome, next, now time.Time) (Payment, error)
	// PaymentByRef returns a payment, or ErrNotFound.
	PaymentByRef(ctx context.Context, caller, ref string) (Payment, error)
	// PaymentsByKey returns the payments bound to key, oldest first.
	PaymentsByKey(ctx context.Context, key string) ([]Payment, error)
}
