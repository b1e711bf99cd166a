package stripe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/handler/safejson"
	"github.com/toolgate/toolgate-go/store"
)

// MaxEventBytes is the largest event body ParseEvent decodes. Stripe's
// events for Checkout Sessions, charges and disputes are a few kilobytes.
const MaxEventBytes = 256 << 10

// Event types that a top-up needs; every other type parses to an Event
// without an object.
const (
	TypeCheckoutSessionCompleted             = "checkout.session.completed"
	TypeCheckoutSessionAsyncPaymentSucceeded = "checkout.session.async_payment_succeeded"
	TypeCheckoutSessionAsyncPaymentFailed    = "checkout.session.async_payment_failed"
	TypeCheckoutSessionExpired               = "checkout.session.expired"
	TypeChargeRefunded                       = "charge.refunded"
	TypeChargeDisputeCreated                 = "charge.dispute.created"
)

// PaymentStatusPaid is a Checkout Session's payment_status once its funds
// are available: the only status that may be credited on
// checkout.session.completed.
const PaymentStatusPaid = "paid"

// Errors of ParseEvent, each a reason for a webhook route to answer 400.
var (
	// ErrEventTooLarge: the body is longer than MaxEventBytes.
	ErrEventTooLarge = errors.New("stripe: event body too large")
	// ErrMalformedEvent: the body is not JSON that toolgate may decode (see
	// safejson.Check), not an event (no id, type or created), or the object
	// of a known event type lacks its id, has another object kind, a negative
	// or too large amount, or a currency that is not three letters.
	ErrMalformedEvent = errors.New("stripe: malformed event")
)

// Event is a Stripe event. Exactly one of CheckoutSession, Charge and
// Dispute is set for the types listed above (Type* constants); all are nil
// for any other type.
type Event struct {
	ID       string
	Type     string
	Created  time.Time
	Livemode bool

	CheckoutSession *CheckoutSession
	Charge          *Charge
	Dispute         *Dispute
}

// CheckoutSession is the part of a Checkout Session a top-up needs. Amounts
// are int64 minor units of Currency, which is upper-case (Stripe sends it
// lower-case). AmountTotal is what the customer paid, the amount to credit.
type CheckoutSession struct {
	ID                string
	AmountTotal       int64
	Currency          string
	PaymentStatus     string // "paid", "unpaid" or "no_payment_required"
	Status            string // "open", "complete" or "expired"
	ClientReferenceID string
	Metadata          map[string]string
	PaymentIntent     string // "" until there is one
}

// Charge is the part of a refunded charge a reversal needs. AmountRefunded
// is the total refunded so far (not only this refund), in minor units of
// Currency (upper-case).
type Charge struct {
	ID             string
	Amount         int64
	AmountRefunded int64
	Currency       string
	PaymentIntent  string
	Metadata       map[string]string
}

// Dispute is the part of a dispute a reversal needs. Amount is in minor
// units of Currency (upper-case).
type Dispute struct {
	ID            string
	Amount        int64
	Currency      string
	Charge        string
	PaymentIntent string
	Reason        string
	Status        string
}

// wireEvent is an event as Stripe sends it; unknown fields are ignored
// (Stripe adds fields without a new API version).
type wireEvent struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Created  int64  `json:"created"`
	Livemode bool   `json:"livemode"`
	Data     struct {
		Object json.RawMessage `json:"object"`
	} `json:"data"`
}

type wireCheckoutSession struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	AmountTotal       *int64            `json:"amount_total"`
	Currency          *string           `json:"currency"`
	PaymentStatus     string            `json:"payment_status"`
	Status            *string           `json:"status"`
	ClientReferenceID *string           `json:"client_reference_id"`
	Metadata          map[string]string `json:"metadata"`
	PaymentIntent     expandable        `json:"payment_intent"`
}

type wireCharge struct {
	ID             string            `json:"id"`
	Object         string            `json:"object"`
	Amount         int64             `json:"amount"`
	AmountRefunded int64             `json:"amount_refunded"`
	Currency       string            `json:"currency"`
	PaymentIntent  expandable        `json:"payment_intent"`
	Metadata       map[string]string `json:"metadata"`
}

type wireDispute struct {
	ID            string     `json:"id"`
	Object        string     `json:"object"`
	Amount        int64      `json:"amount"`
	Currency      string     `json:"currency"`
	Charge        expandable `json:"charge"`
	PaymentIntent expandable `json:"payment_intent"`
	Reason        string     `json:"reason"`
	Status        string     `json:"status"`
}

// expandable is a Stripe reference: null, an id, or the expanded object,
// of which only the id is kept.
type expandable string

func (e *expandable) UnmarshalJSON(b []byte) error {
	switch {
	case bytes.Equal(b, []byte("null")):
		*e = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*e = expandable(s)
		return nil
	}
	var obj struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return err
	}
	*e = expandable(obj.ID)
	return nil
}

// ParseEvent decodes a Stripe event from body, which should have been
// verified first (Verify). It returns ErrEventTooLarge or ErrMalformedEvent
// (wrapped, with the reason); an event of a type not listed in the Type*
// constants is no error and has no object.
func ParseEvent(body []byte) (Event, error) {
	if len(body) > MaxEventBytes {
		return Event{}, fmt.Errorf("%w: more than %d bytes", ErrEventTooLarge, MaxEventBytes)
	}
	if reason := safejson.Check(body, safejson.MaxDepth); reason != "" {
		return Event{}, fmt.Errorf("%w: %s", ErrMalformedEvent, reason)
	}
	var w wireEvent
	if err := json.Unmarshal(body, &w); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformedEvent, err)
	}
	if w.ID == "" || w.Type == "" || w.Created <= 0 {
		return Event{}, fmt.Errorf("%w: no id, type or created", ErrMalformedEvent)
	}
	ev := Event{ID: w.ID, Type: w.Type, Created: time.Unix(w.Created, 0).UTC(), Livemode: w.Livemode}
	var err error
	switch w.Type {
	case TypeCheckoutSessionCompleted, TypeCheckoutSessionAsyncPaymentSucceeded,
		TypeCheckoutSessionAsyncPaymentFailed, TypeCheckoutSessionExpired:
		ev.CheckoutSession, err = decodeCheckoutSession(w.Data.Object)
	case TypeChargeRefunded:
		ev.Charge, err = decodeCharge(w.Data.Object)
	case TypeChargeDisputeCreated:
		ev.Dispute, err = decodeDispute(w.Data.Object)
	}
	if err != nil {
		return Event{}, fmt.Errorf("%w: %s: %v", ErrMalformedEvent, w.Type, err)
	}
	return ev, nil
}

// decodeObject decodes data.object into v and checks its id and its kind.
func decodeObject(raw json.RawMessage, v any, id, object *string, want string) error {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return errors.New("no data.object")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return err
	}
	if *object != want {
		return fmt.Errorf("data.object is a %q, not a %q", *object, want)
	}
	if *id == "" {
		return errors.New("data.object has no id")
	}
	return nil
}

func decodeCheckoutSession(raw json.RawMessage) (*CheckoutSession, error) {
	var w wireCheckoutSession
	if err := decodeObject(raw, &w, &w.ID, &w.Object, "checkout.session"); err != nil {
		return nil, err
	}
	s := &CheckoutSession{
		ID:            w.ID,
		PaymentStatus: w.PaymentStatus,
		Metadata:      w.Metadata,
		PaymentIntent: string(w.PaymentIntent),
	}
	if w.AmountTotal != nil {
		s.AmountTotal = *w.AmountTotal
	}
	if err := checkAmount("amount_total", s.AmountTotal); err != nil {
		return nil, err
	}
	if w.Currency != nil {
		c, err := upperCurrency(*w.Currency)
		if err != nil {
			return nil, err
		}
		s.Currency = c
	}
	if w.Status != nil {
		s.Status = *w.Status
	}
	if w.ClientReferenceID != nil {
		s.ClientReferenceID = *w.ClientReferenceID
	}
	return s, nil
}

func decodeCharge(raw json.RawMessage) (*Charge, error) {
	var w wireCharge
	if err := decodeObject(raw, &w, &w.ID, &w.Object, "charge"); err != nil {
		return nil, err
	}
	if err := checkAmount("amount", w.Amount); err != nil {
		return nil, err
	}
	if err := checkAmount("amount_refunded", w.AmountRefunded); err != nil {
		return nil, err
	}
	c, err := upperCurrency(w.Currency)
	if err != nil {
		return nil, err
	}
	return &Charge{
		ID:             w.ID,
		Amount:         w.Amount,
		AmountRefunded: w.AmountRefunded,
		Currency:       c,
		PaymentIntent:  string(w.PaymentIntent),
		Metadata:       w.Metadata,
	}, nil
}

func decodeDispute(raw json.RawMessage) (*Dispute, error) {
	var w wireDispute
	if err := decodeObject(raw, &w, &w.ID, &w.Object, "dispute"); err != nil {
		return nil, err
	}
	if err := checkAmount("amount", w.Amount); err != nil {
		return nil, err
	}
	c, err := upperCurrency(w.Currency)
	if err != nil {
		return nil, err
	}
	return &Dispute{
		ID:            w.ID,
		Amount:        w.Amount,
		Currency:      c,
		Charge:        string(w.Charge),
		PaymentIntent: string(w.PaymentIntent),
		Reason:        w.Reason,
		Status:        w.Status,
	}, nil
}

// checkAmount refuses amounts below zero or above store.MaxAmount, which D1
// could not hold exactly.
func checkAmount(field string, v int64) error {
	if v < 0 || v > store.MaxAmount {
		return fmt.Errorf("%s %d is out of range", field, v)
	}
	return nil
}

// upperCurrency upper-cases a three-letter ISO 4217 code.
func upperCurrency(c string) (string, error) {
	if !isLetters(c, 3) {
		return "", fmt.Errorf("currency %q is not three letters", c)
	}
	return strings.ToUpper(c), nil
}

func isLetters(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < 'a' || s[i] > 'z') && (s[i] < 'A' || s[i] > 'Z') {
			return false
		}
	}
	return true
}
