package stripe

import (
	"context"
	"errors"
	"fmt"

	"github.com/toolgate/toolgate-go/handler/pay"
)

// Rail is the Stripe rail behind the engine's pay.Checkout seam: a top-up's
// payment page is a Checkout Session, created with an Idempotency-Key
// derived from the caller and the stored top-up's id (IdempotencyKey): the
// id is the same for every retry of one caller key, so a retried top-up
// gets the same session back from Stripe, and it is random, so two gateways
// sharing a Stripe account never send the same key for different top-ups.
type Rail struct {
	Client *Client
	// ProductName names the line item; "" means DefaultProductName.
	ProductName string
}

var _ pay.Checkout = (*Rail)(nil)

// Rail implements pay.Checkout.
func (r *Rail) Rail() string { return RailName }

// CreateCheckout implements pay.Checkout. Stripe's network errors, 429 and
// 5xx become pay.ErrUnavailable; its other refusals a *pay.RejectedError
// with Stripe's message.
func (r *Rail) CreateCheckout(ctx context.Context, req pay.CheckoutRequest) (pay.CheckoutSession, error) {
	s, err := r.Client.CreateCheckoutSession(ctx, CheckoutSessionParams{Amount: req.Amount, Currency: req.Currency,
		ProductName: r.ProductName, SuccessURL: req.SuccessURL, CancelURL: req.CancelURL,
		Caller: req.Caller, TopupID: req.TopupID}, IdempotencyKey(req.Caller, req.TopupID))
	var apiErr *APIError
	switch {
	case err == nil:
		if s.URL == "" {
			return pay.CheckoutSession{}, &pay.RejectedError{Rail: RailName, Status: 502,
				Reason: "Stripe created session " + s.ID + " without a payment page URL"}
		}
		return pay.CheckoutSession{ID: s.ID, URL: s.URL}, nil
	case errors.Is(err, ErrStripeUnavailable):
		return pay.CheckoutSession{}, fmt.Errorf("%w: %v", pay.ErrUnavailable, err)
	case errors.As(err, &apiErr):
		return pay.CheckoutSession{}, &pay.RejectedError{Rail: RailName, Status: apiErr.Status, Reason: apiErr.Message}
	case errors.Is(err, ErrInvalidCheckoutParams):
		return pay.CheckoutSession{}, &pay.RejectedError{Rail: RailName, Status: 400, Reason: err.Error()}
	}
	return pay.CheckoutSession{}, fmt.Errorf("%w: %v", pay.ErrUnavailable, err)
}
