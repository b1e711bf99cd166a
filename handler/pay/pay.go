// Package pay is the seam between the engine and the payment rails: what
// the engine asks of a rail, in the engine's terms, so that the engine knows
// rails only through these types and each rail (pay/stripe, ...) speaks its
// provider's wire format behind them.
//
// A rail that sells prepaid top-ups implements Checkout: it makes a hosted
// payment page for one top-up. Money does not move here: it moves when the
// rail's verified event is applied to the store (store.Topups), through the
// engine's one credit path.
package pay

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Checkout is a rail that sells prepaid top-ups through a hosted payment
// page (Stripe Checkout).
type Checkout interface {
	// Rail names the rail ("stripe"); it scopes the rail's event and
	// payment ids in the store.
	Rail() string
	// CreateCheckout creates the payment page of one top-up. Asked again
	// for the same caller and TopupID (which one caller key always names)
	// it returns the same page (the rail's own idempotency), so a retried
	// top-up never makes a second one. Errors
	// are ErrUnavailable (retry later) or a *RejectedError.
	CreateCheckout(ctx context.Context, req CheckoutRequest) (CheckoutSession, error)
}

// CheckoutRequest is one top-up's payment page.
type CheckoutRequest struct {
	Caller   string
	TopupID  string
	Key      string // the caller's idempotency key for the top-up
	Amount   int64  // minor units of Currency
	Currency string
	// SuccessURL and CancelURL are where the page sends the customer
	// back: absolute http(s) URLs.
	SuccessURL, CancelURL string
}

// CheckoutSession is a created payment page.
type CheckoutSession struct {
	ID  string // the rail's id of the page (a Checkout Session id)
	URL string // where the customer pays
}

// ErrUnavailable means the rail could not be reached, timed out or failed
// on its side (5xx, rate limited): nothing is known to have been created,
// and the same request may be retried.
var ErrUnavailable = errors.New("pay: payment provider unavailable")

// RejectedError means the rail refused the request (a 4xx of its API) for
// a reason that a retry will not change.
type RejectedError struct {
	Rail   string
	Status int    // the provider's HTTP status
	Reason string // the provider's message, safe to show the caller
	// Code is the provider's machine-readable reason, when it has one
	// (x402's invalidReason or errorReason; ReasonAlreadySettled).
	Code string
	// MaybeMoved is set on a settle refusal that an earlier settle of the
	// same payment having gone through could also explain (it expired
	// since, or the payer's balance is spent): after a settle whose outcome
	// was unknown, such a refusal proves nothing.
	MaybeMoved bool
}

// Error implements error.
func (e *RejectedError) Error() string {
	return fmt.Sprintf("pay: %s refused the request (%d): %s", e.Rail, e.Status, e.Reason)
}

// PerCall is a rail that pays one call at a time with a signed payment
// (x402): the engine binds the payment to the key it pays for, verifies it
// before the tool runs, and settles it only after the tool succeeded.
type PerCall interface {
	// Rail names the rail ("x402").
	Rail() string
	// Verify asks whether p would settle now. Errors: a *RejectedError
	// with the rail's reason (the payment is no good: 402), or
	// ErrUnavailable (nothing moved; retry).
	Verify(ctx context.Context, p Payment) error
	// Settle moves the money. Errors: a *RejectedError (definitively not
	// settled: nothing moved), or ErrSettlementUnknown (no usable answer:
	// the money may have moved; settle the same payment again later, never
	// ask for a new one).
	Settle(ctx context.Context, p Payment) (Settlement, error)
}

// Payment is a per-call payment presented with a request, decoded and
// matched to what the tool accepts by its rail's surface code.
type Payment struct {
	Rail string
	// Payer is the payer's address; Caller ("x402:" + payer) scopes its
	// keys, payments and credit-back balance.
	Payer  string
	Caller string
	// Ref identifies the signed payment: what its chain refuses to settle
	// twice. One Ref pays for one key.
	Ref string
	// KeyHint is the idempotency key the payment names (the
	// payment-identifier extension's id, else its nonce): the key of a
	// request that sends no Idempotency-Key.
	KeyHint  string
	Network  string
	Amount   int64 // minor (atomic) units of Currency
	Currency string
	// ValidBefore is when the signed payment expires: a pending settle is
	// retried until then.
	ValidBefore time.Time
	// Payload and Requirements are the rail's own encoding of the payment
	// and of what it pays for, kept to settle it again later.
	Payload, Requirements []byte
	// Expired, when not "", is the rail's reason code for an authorization
	// that has expired: the payment may still open the key it paid for (a
	// replay), but pays for nothing new.
	Expired string
}

// Settlement is a settled payment: the rail's transaction and the receipt
// document the surface returns (x402's PAYMENT-RESPONSE).
type Settlement struct {
	Transaction string
	Receipt     []byte
}

// ErrSettlementUnknown means a settle got no usable answer: the money may
// have moved. The payment must be settled again later (the same payment,
// which counts once), never replaced by a new one.
var ErrSettlementUnknown = errors.New("pay: settlement outcome unknown")

// Rejection reasons the engine acts on.
const (
	// ReasonAlreadySettled is a settle refused because the payment was
	// settled before: after an unknown outcome, that earlier settle went
	// through.
	ReasonAlreadySettled = "already_settled"
)
