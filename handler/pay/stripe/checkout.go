package stripe

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/toolgate/toolgate-go/store"
)

// DefaultProductName names the line item of a top-up's Checkout Session
// when CheckoutSessionParams.ProductName is empty.
const DefaultProductName = "Prepaid balance top-up"

// ErrInvalidCheckoutParams is returned by CheckoutSessionForm, wrapped with
// the reason, for parameters Stripe would refuse or toolgate cannot credit.
var ErrInvalidCheckoutParams = errors.New("stripe: invalid Checkout Session parameters")

// CheckoutSessionParams describes one top-up's Checkout Session.
type CheckoutSessionParams struct {
	// Amount is what the customer pays and what is credited, in minor units
	// of Currency: 0 < Amount <= store.MaxAmount.
	Amount int64
	// Currency is a three-letter ISO 4217 code, in either case.
	Currency string
	// ProductName is the line item's name; "" means DefaultProductName.
	ProductName string
	// SuccessURL and CancelURL are where Checkout sends the customer back:
	// absolute http or https URLs.
	SuccessURL, CancelURL string
	// Caller is the caller credited (metadata[caller]); at most 500 bytes,
	// Stripe's limit for a metadata value.
	Caller string
	// TopupID is toolgate's top-up id, sent as client_reference_id and
	// metadata[topup_id]; at most 200 bytes, Stripe's limit for
	// client_reference_id.
	TopupID string
}

// CheckoutSessionForm returns the form-encoded body of
// POST /v1/checkout/sessions for p, in Stripe's bracket notation: a payment
// mode session with one price_data line item of quantity 1, Adaptive Pricing
// off (so the customer pays, and amount_total is, in the top-up's own
// currency, which is what is credited), the return URLs,
// client_reference_id = TopupID, and metadata naming the caller and the
// top-up, on the session and on its PaymentIntent (payment_intent_data), so
// that the charge of a later refund or dispute names them too. Encode sorts
// the keys, so the body is deterministic. It returns
// ErrInvalidCheckoutParams.
func CheckoutSessionForm(p CheckoutSessionParams) (url.Values, error) {
	if p.Amount <= 0 || p.Amount > store.MaxAmount {
		return nil, fmt.Errorf("%w: amount %d is out of range", ErrInvalidCheckoutParams, p.Amount)
	}
	if !isLetters(p.Currency, 3) {
		return nil, fmt.Errorf("%w: currency %q is not three letters", ErrInvalidCheckoutParams, p.Currency)
	}
	for name, u := range map[string]string{"success URL": p.SuccessURL, "cancel URL": p.CancelURL} {
		parsed, err := url.Parse(u)
		if err != nil || (parsed.Scheme != "https" && parsed.Scheme != "http") || parsed.Host == "" {
			return nil, fmt.Errorf("%w: the %s is not an absolute http(s) URL", ErrInvalidCheckoutParams, name)
		}
	}
	if p.Caller == "" || len(p.Caller) > 500 {
		return nil, fmt.Errorf("%w: the caller must have 1 to 500 bytes", ErrInvalidCheckoutParams)
	}
	if p.TopupID == "" || len(p.TopupID) > 200 {
		return nil, fmt.Errorf("%w: the top-up id must have 1 to 200 bytes", ErrInvalidCheckoutParams)
	}
	name := p.ProductName
	if name == "" {
		name = DefaultProductName
	}
	const item = "line_items[0]"
	return url.Values{
		"mode":                                    {"payment"},
		"adaptive_pricing[enabled]":               {"false"},
		item + "[price_data][currency]":           {strings.ToLower(p.Currency)},
		item + "[price_data][unit_amount]":        {strconv.FormatInt(p.Amount, 10)},
		item + "[price_data][product_data][name]": {name},
		item + "[quantity]":                       {"1"},
		"success_url":                             {p.SuccessURL},
		"cancel_url":                              {p.CancelURL},
		"client_reference_id":                     {p.TopupID},
		"metadata[caller]":                        {p.Caller},
		"metadata[topup_id]":                      {p.TopupID},
		"payment_intent_data[metadata][caller]":   {p.Caller},
		"payment_intent_data[metadata][topup_id]": {p.TopupID},
	}, nil
}

// IdempotencyKey returns the Idempotency-Key toolgate sends Stripe when it
// creates the Checkout Session of the top-up that caller asked for with its
// own idempotency key: "tg-topup-" followed by the first 32 hexadecimal digits
// (128 bits) of SHA-256(caller + "\x00" + key). The same caller and key always
// give the same Stripe key, so a retried top-up never makes a second session;
// two callers with the same key never collide (a key never contains NUL,
// store.ValidateKey, so the string hashed names one caller and key); neither the caller nor its
// key is revealed to Stripe. It cannot fail.
func IdempotencyKey(caller, key string) string {
	sum := sha256.Sum256([]byte(caller + "\x00" + key))
	return "tg-topup-" + hex.EncodeToString(sum[:])[:32]
}
