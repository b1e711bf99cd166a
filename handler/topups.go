package handler

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/pay/stripe"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/store"
)

// StripeConfig enables the Stripe rail: prepaid top-ups paid through
// Stripe Checkout, credited by Stripe's webhook.
type StripeConfig struct {
	// SecretKey is the API key (sk_live_..., sk_test_... or rk_...) that
	// creates Checkout Sessions. Empty, or no WebhookSecrets (a top-up could
	// be paid and never credited), disables POST /v1/topups and
	// GET /v1/topups/{id} (501).
	SecretKey string
	// WebhookSecrets are the webhook endpoint's signing secrets (whsec_...);
	// several during a rotation. Empty disables POST /v1/webhooks/stripe
	// (501).
	WebhookSecrets []string
	// APIBase is Stripe's API origin; "" means https://api.stripe.com
	// (tests point it at stripe-mock).
	APIBase string
	// Send sends Stripe's API requests: the worker's fetch, or
	// nil natively for http.DefaultClient.Do. Required in the Worker.
	Send func(*http.Request) (*http.Response, error)
	// Topups limits what a top-up may be (engine.ParseTopupPolicy).
	Topups engine.TopupPolicy
	// Tolerance is how far a webhook's signature time may be from now;
	// zero means stripe.DefaultTolerance (5 minutes).
	Tolerance time.Duration
}

// topupJSON is a top-up as the API shows it.
type topupJSON struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Amount    string `json:"amount"`
	Currency  string `json:"currency"`
	URL       string `json:"url,omitempty"`
	Credited  string `json:"credited"`
	Reversed  string `json:"reversed"`
	CreatedAt string `json:"createdAt"`
	UpdatedAt string `json:"updatedAt"`
}

func topupView(t store.Topup) topupJSON {
	cur := t.Currency
	credited := store.FormatAmount(t.Credited, cur)
	reversed := store.FormatAmount(t.Reversed, cur)
	if t.CreditedCurrency != "" {
		credited = store.FormatAmount(t.Credited, t.CreditedCurrency)
		reversed = store.FormatAmount(t.Reversed, t.CreditedCurrency)
	}
	v := topupJSON{ID: t.ID, Status: string(t.Status), Amount: store.FormatAmount(t.Amount, cur), Currency: cur,
		Credited: credited, Reversed: reversed,
		CreatedAt: t.CreatedAt.UTC().Format(time.RFC3339Nano), UpdatedAt: t.UpdatedAt.UTC().Format(time.RFC3339Nano)}
	if t.Status == store.TopupOpen || t.Status == store.TopupPending {
		v.URL = t.URL // the page is worth showing only while it can be paid
	}
	return v
}

// handleCreateTopup serves POST /v1/topups {"amount": "10.00", "currency":
// "USD", "successUrl"?, "cancelUrl"?} with an Idempotency-Key: 201 with the
// new top-up and its payment page, or 200 with the one the key made before.
func (s *server) handleCreateTopup(w http.ResponseWriter, r *http.Request) {
	caller, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if !s.engine.TopupsEnabled() {
		problem.Write(w, engine.ErrTopupsDisabled)
		return
	}
	key, err := engine.ParseIdempotencyKey(r.Header.Values("Idempotency-Key"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	var in struct {
		Amount     string `json:"amount"`
		Currency   string `json:"currency"`
		SuccessURL string `json:"successUrl"`
		CancelURL  string `json:"cancelUrl"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		problem.Write(w, err)
		return
	}
	if in.Currency == "" || in.Amount == "" {
		problem.Write(w, &engine.TopupError{Reason: `amount and currency are required, e.g. {"amount": "10.00", "currency": "USD"}`})
		return
	}
	amount, err := store.ParseAmount(in.Amount, in.Currency)
	if err != nil {
		problem.Write(w, &engine.TopupError{Reason: err.Error()})
		return
	}
	t, replayed, err := s.engine.CreateTopup(r.Context(), engine.TopupRequest{Caller: caller.ID, Key: key,
		Amount: amount, Currency: in.Currency, SuccessURL: in.SuccessURL, CancelURL: in.CancelURL})
	if err != nil {
		problem.Write(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", engine.TopupsPath+"/"+t.ID)
	status := http.StatusCreated
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
		status = http.StatusOK
	}
	writeJSON(w, status, topupView(t))
}

// handleGetTopup serves GET /v1/topups/{id}: the caller's own top-up.
func (s *server) handleGetTopup(w http.ResponseWriter, r *http.Request) {
	caller, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	t, err := s.engine.Topup(r.Context(), caller.ID, r.PathValue("id"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, topupView(t))
}

// handleStripeWebhook serves POST /v1/webhooks/stripe. It verifies the
// Stripe-Signature over the raw body before reading it as an event, then
// applies the event once (engine.ApplyTopupEvent). Answers: 200 for an
// applied, duplicate or ignored event (Stripe need not send it again); 400
// problem+json, changing nothing, for a missing or bad signature, a stale
// timestamp or a malformed body; 503 when the store fails, so that Stripe
// retries.
func (s *server) handleStripeWebhook(w http.ResponseWriter, r *http.Request) {
	if len(s.stripe.WebhookSecrets) == 0 {
		problem.Write(w, fmt.Errorf("%w: no Stripe webhook secret is configured", engine.ErrTopupsDisabled))
		return
	}
	body, err := readBody(w, r, stripe.MaxEventBytes)
	if err != nil {
		problem.Write(w, err)
		return
	}
	tolerance := s.stripe.Tolerance
	if tolerance <= 0 {
		tolerance = stripe.DefaultTolerance
	}
	if err := stripe.Verify(r.Header.Get("Stripe-Signature"), body, s.stripe.WebhookSecrets, s.engine.Now(), tolerance); err != nil {
		problem.Write(w, &problem.WebhookError{Reason: strings.TrimPrefix(err.Error(), "stripe: ")})
		return
	}
	ev, err := stripe.ParseEvent(body)
	if err != nil {
		problem.Write(w, &problem.WebhookError{Reason: strings.TrimPrefix(err.Error(), "stripe: ")})
		return
	}
	out := struct {
		Received  bool   `json:"received"`
		Event     string `json:"event"`
		Duplicate bool   `json:"duplicate,omitempty"`
		Ignored   string `json:"ignored,omitempty"`
		Parked    bool   `json:"parked,omitempty"`
		Topup     string `json:"topup,omitempty"`
		Status    string `json:"status,omitempty"`
	}{Received: true, Event: ev.ID}
	tev, ok := ev.TopupEvent()
	if !ok {
		out.Ignored = "event type " + ev.Type + " is not handled"
		writeJSON(w, http.StatusOK, out)
		return
	}
	res, err := s.engine.ApplyTopupEvent(r.Context(), tev)
	if err != nil {
		problem.Write(w, err)
		return
	}
	out.Duplicate, out.Ignored, out.Parked = res.Duplicate, res.Ignored, res.Parked
	out.Topup, out.Status = res.Topup.ID, string(res.Topup.Status)
	writeJSON(w, http.StatusOK, out)
}
