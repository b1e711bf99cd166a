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
}

// Error implements error.
func (e *RejectedError) Error() string {
	return fmt.Sprintf("pay: %s refused the request (%d): %s", e.Rail, e.Status, e.Reason)
}
