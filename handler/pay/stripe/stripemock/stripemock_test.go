package stripemock_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/pay/stripe"
	"github.com/toolgate/toolgate-go/handler/pay/stripe/stripemock"
)

const secret = "whsec_stripemock_test"

// TestSignedEventParses checks that every builder's object, in a signed
// event, passes our Verify and decodes with ParseEvent to what was built.
func TestSignedEventParses(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	md := map[string]string{"caller": "agent-7", "topup_id": "tu_1"}
	tests := map[string]struct {
		typ    string
		object map[string]any
		check  func(t *testing.T, ev stripe.Event)
	}{
		"completed": {
			stripe.TypeCheckoutSessionCompleted,
			stripemock.CheckoutSession("cs_test_1", "agent-7", "tu_1", 2500, "usd", "paid", "complete", "pi_1"),
			func(t *testing.T, ev stripe.Event) {
				require.Equal(t, &stripe.CheckoutSession{
					ID: "cs_test_1", AmountTotal: 2500, Currency: "USD", PaymentStatus: "paid", Status: "complete",
					ClientReferenceID: "tu_1", Metadata: md, PaymentIntent: "pi_1",
				}, ev.CheckoutSession)
			},
		},
		"expired without a PaymentIntent": {
			stripe.TypeCheckoutSessionExpired,
			stripemock.CheckoutSession("cs_test_2", "agent-7", "tu_1", 4000, "EUR", "unpaid", "expired", ""),
			func(t *testing.T, ev stripe.Event) {
				require.Equal(t, &stripe.CheckoutSession{
					ID: "cs_test_2", AmountTotal: 4000, Currency: "EUR", PaymentStatus: "unpaid", Status: "expired",
					ClientReferenceID: "tu_1", Metadata: md,
				}, ev.CheckoutSession)
			},
		},
		"refunded": {
			stripe.TypeChargeRefunded,
			stripemock.Charge("ch_1", "pi_1", 2500, 1000, "usd", md),
			func(t *testing.T, ev stripe.Event) {
				require.Equal(t, &stripe.Charge{
					ID: "ch_1", Amount: 2500, AmountRefunded: 1000, Currency: "USD", PaymentIntent: "pi_1", Metadata: md,
				}, ev.Charge)
			},
		},
		"dispute": {
			stripe.TypeChargeDisputeCreated,
			stripemock.Dispute("du_1", "ch_1", "pi_1", 2500, "usd"),
			func(t *testing.T, ev stripe.Event) {
				require.Equal(t, &stripe.Dispute{
					ID: "du_1", Amount: 2500, Currency: "USD", Charge: "ch_1", PaymentIntent: "pi_1",
					Reason: "fraudulent", Status: "needs_response",
				}, ev.Dispute)
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			body, header := stripemock.SignedEvent(t, secret, tc.typ, tc.object, created)
			require.NoError(t, stripe.Verify(header, body, []string{secret}, created.Add(time.Minute), 0))
			require.ErrorIs(t, stripe.Verify(header, body, []string{"whsec_other"}, created, 0), stripe.ErrNoMatchingSignature)
			ev, err := stripe.ParseEvent(body)
			require.NoError(t, err)
			require.True(t, strings.HasPrefix(ev.ID, "evt_"), ev.ID)
			require.Equal(t, tc.typ, ev.Type)
			require.Equal(t, created, ev.Created)
			require.False(t, ev.Livemode)
			tc.check(t, ev)
		})
	}
}

func TestSignedEventsHaveDistinctIDs(t *testing.T) {
	t.Parallel()
	obj := stripemock.Dispute("du_1", "ch_1", "pi_1", 2500, "usd")
	a, _ := stripemock.SignedEvent(t, secret, stripe.TypeChargeDisputeCreated, obj, time.Time{})
	b, _ := stripemock.SignedEvent(t, secret, stripe.TypeChargeDisputeCreated, obj, time.Time{})
	evA, err := stripe.ParseEvent(a)
	require.NoError(t, err)
	evB, err := stripe.ParseEvent(b)
	require.NoError(t, err)
	require.NotEqual(t, evA.ID, evB.ID)
	require.WithinDuration(t, time.Now(), evA.Created, time.Minute, "the zero time means now")
}

// TestStart checks that the server answers as Stripe's API does: it wants
// a secret key, and it refuses a Stripe-Version other than SpecVersion.
func TestStart(t *testing.T) {
	t.Parallel()
	base := stripemock.Start(t)
	require.True(t, strings.HasPrefix(base, "http://127.0.0.1:"), base)

	get := func(version string) int {
		req, err := http.NewRequest(http.MethodGet, base+"/v1/checkout/sessions", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer sk_test_123")
		if version != "" {
			req.Header.Set("Stripe-Version", version)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		return res.StatusCode
	}
	require.Equal(t, http.StatusOK, get(stripemock.SpecVersion))
	require.Equal(t, http.StatusOK, get(""))
	require.Equal(t, http.StatusBadRequest, get("2020-08-27"))
	require.Equal(t, stripemock.SpecVersion, stripe.APIVersion, "the client pins the version stripe-mock validates against")
}
