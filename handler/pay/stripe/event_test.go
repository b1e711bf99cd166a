//go:build !js

package stripe_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/pay/stripe"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	require.NoError(t, err)
	return b
}

func TestParseEventCheckoutSessions(t *testing.T) {
	t.Parallel()
	paid := &stripe.CheckoutSession{
		ID:                "cs_test_a1B2c3D4e5F6g7H8i9J0kLmNoPqRsTuVwXyZ",
		AmountTotal:       2500,
		Currency:          "USD",
		PaymentStatus:     stripe.PaymentStatusPaid,
		Status:            "complete",
		ClientReferenceID: "tu_01JF3Q8Z",
		Metadata:          map[string]string{"caller": "agent-7", "topup_id": "tu_01JF3Q8Z"},
		PaymentIntent:     "pi_3QaB2cD3eF4gH5iJ0abcdEFG",
	}
	unpaid := *paid
	unpaid.PaymentStatus = "unpaid"
	tests := map[string]struct {
		id      string
		created int64
		want    *stripe.CheckoutSession
	}{
		stripe.TypeCheckoutSessionCompleted:             {"evt_1QaB2cD3eF4gH5iJ6kL7mN8o", 1764572400, paid},
		stripe.TypeCheckoutSessionAsyncPaymentSucceeded: {"evt_1QaB2cD3eF4gH5iJasyncOK1", 1764572460, paid},
		stripe.TypeCheckoutSessionAsyncPaymentFailed:    {"evt_1QaB2cD3eF4gH5iJasyncNO1", 1764572460, &unpaid},
		stripe.TypeCheckoutSessionExpired: {"evt_1QaB2cD3eF4gH5iJexpired1", 1764572460, &stripe.CheckoutSession{
			ID:                "cs_test_a1B2c3D4e5F6g7H8i9J0kLmNoPqRsTuVwXyZ",
			AmountTotal:       4000,
			Currency:          "EUR",
			PaymentStatus:     "unpaid",
			Status:            "expired",
			ClientReferenceID: "tu_01JF3R00",
			Metadata:          map[string]string{"caller": "agent-9", "topup_id": "tu_01JF3R00"},
		}},
	}
	for typ, tc := range tests {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			ev, err := stripe.ParseEvent(fixture(t, typ))
			require.NoError(t, err)
			require.Equal(t, stripe.Event{
				ID:              tc.id,
				Type:            typ,
				Created:         time.Unix(tc.created, 0).UTC(),
				CheckoutSession: tc.want,
			}, ev)
		})
	}
}

func TestParseEventChargeRefunded(t *testing.T) {
	t.Parallel()
	ev, err := stripe.ParseEvent(fixture(t, stripe.TypeChargeRefunded))
	require.NoError(t, err)
	require.Equal(t, stripe.Event{
		ID:      "evt_3QaB2cD3eF4gH5iJ0refund01",
		Type:    stripe.TypeChargeRefunded,
		Created: time.Unix(1764600000, 0).UTC(),
		Charge: &stripe.Charge{
			ID:             "ch_3QaB2cD3eF4gH5iJ0abcdXYZ",
			Amount:         2500,
			AmountRefunded: 1000,
			Currency:       "USD",
			PaymentIntent:  "pi_3QaB2cD3eF4gH5iJ0abcdEFG",
			Metadata:       map[string]string{"caller": "agent-7", "topup_id": "tu_01JF3Q8Z"},
		},
	}, ev)
}

func TestParseEventDisputeCreated(t *testing.T) {
	t.Parallel()
	ev, err := stripe.ParseEvent(fixture(t, stripe.TypeChargeDisputeCreated))
	require.NoError(t, err)
	require.Equal(t, stripe.Event{
		ID:      "evt_1QaB2cD3eF4gH5iJdispute01",
		Type:    stripe.TypeChargeDisputeCreated,
		Created: time.Unix(1764700000, 0).UTC(),
		Dispute: &stripe.Dispute{
			ID:            "du_1QaB2cD3eF4gH5iJ0dispAB",
			Amount:        2500,
			Currency:      "USD",
			Charge:        "ch_3QaB2cD3eF4gH5iJ0abcdXYZ",
			PaymentIntent: "pi_3QaB2cD3eF4gH5iJ0abcdEFG",
			Reason:        "fraudulent",
			Status:        "warning_needs_response",
		},
	}, ev)
}

// An expanded reference (an object instead of an id) keeps its id.
func TestParseEventExpandedReferences(t *testing.T) {
	t.Parallel()
	body := strings.Replace(string(fixture(t, stripe.TypeChargeDisputeCreated)),
		`"charge": "ch_3QaB2cD3eF4gH5iJ0abcdXYZ"`, `"charge": {"id": "ch_expanded", "object": "charge", "amount": 2500}`, 1)
	ev, err := stripe.ParseEvent([]byte(body))
	require.NoError(t, err)
	require.Equal(t, "ch_expanded", ev.Dispute.Charge)
	require.Equal(t, "pi_3QaB2cD3eF4gH5iJ0abcdEFG", ev.Dispute.PaymentIntent)
}

func TestParseEventUnknownType(t *testing.T) {
	t.Parallel()
	ev, err := stripe.ParseEvent(fixture(t, "customer.created"))
	require.NoError(t, err)
	require.Equal(t, stripe.Event{
		ID:      "evt_1QaB2cD3eF4gH5iJcustomer1",
		Type:    "customer.created",
		Created: time.Unix(1764572000, 0).UTC(),
	}, ev)
}

func TestParseEventRefused(t *testing.T) {
	t.Parallel()
	completed := string(fixture(t, stripe.TypeCheckoutSessionCompleted))
	swap := func(old, new string) string {
		require.Contains(t, completed, old)
		return strings.Replace(completed, old, new, 1)
	}
	tests := map[string]string{
		"not JSON":              `{"id": "evt_1", "type": `,
		"not an object":         `[1, 2, 3]`,
		"trailing garbage":      completed + "}",
		"too deep":              `{"id":"evt_1","type":"x","created":1,"data":{"object":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}}`,
		"invalid UTF-8":         "{\"id\":\"evt_\xff\",\"type\":\"x\",\"created\":1}",
		"no id":                 `{"type":"customer.created","created":1}`,
		"no type":               `{"id":"evt_1","created":1}`,
		"no created":            `{"id":"evt_1","type":"customer.created"}`,
		"no data.object":        `{"id":"evt_1","type":"checkout.session.completed","created":1,"data":{}}`,
		"another object kind":   swap(`"object": "checkout.session"`, `"object": "charge"`),
		"object without id":     swap(`"id": "cs_test_a1B2c3D4e5F6g7H8i9J0kLmNoPqRsTuVwXyZ"`, `"id": ""`),
		"negative amount":       swap(`"amount_total": 2500`, `"amount_total": -1`),
		"amount above 2^53-1":   swap(`"amount_total": 2500`, `"amount_total": 9007199254740992`),
		"fractional amount":     swap(`"amount_total": 2500`, `"amount_total": 25.5`),
		"amount as a string":    swap(`"amount_total": 2500`, `"amount_total": "2500"`),
		"currency not letters":  swap(`"currency": "usd"`, `"currency": "us1"`),
		"metadata not strings":  swap(`"caller": "agent-7"`, `"caller": 7`),
		"payment_intent number": swap(`"payment_intent": "pi_3QaB2cD3eF4gH5iJ0abcdEFG"`, `"payment_intent": 7`),
	}
	for name, body := range tests {
		_, err := stripe.ParseEvent([]byte(body))
		require.ErrorIs(t, err, stripe.ErrMalformedEvent, name)
	}

	big := `{"id":"evt_1","type":"x","created":1,"pad":"` + strings.Repeat("x", stripe.MaxEventBytes) + `"}`
	_, err := stripe.ParseEvent([]byte(big))
	require.ErrorIs(t, err, stripe.ErrEventTooLarge)
}
