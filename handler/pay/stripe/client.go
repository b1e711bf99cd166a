package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/handler/safejson"
)

// DefaultBaseURL is Stripe's API, used when Client.BaseURL is empty.
const DefaultBaseURL = "https://api.stripe.com"

// APIVersion is the Stripe-Version header of every request: the API
// version whose OpenAPI document stripe-mock v0.203.0 validates requests
// against (the harness in ./stripemock starts it with -strict-version-check,
// so the tests fail if the two drift apart). Pinning it keeps the account's
// default version, which its owner may upgrade at any time, out of the
// answers toolgate decodes; the fields Session reads have kept their names
// and meaning across versions, and webhook events carry the endpoint's own
// version regardless.
const APIVersion = "2026-08-26.dahlia"

// MaxResponseBytes is the most of an answer the Client reads; a Checkout
// Session is a few kilobytes.
const MaxResponseBytes = 256 << 10

// MaxIdempotencyKeyBytes is Stripe's limit for an Idempotency-Key.
const MaxIdempotencyKeyBytes = 255

// Errors of the Client.
var (
	// ErrStripeUnavailable: Stripe could not be reached, the answer broke
	// off, or Stripe answered 409, 429 or 5xx (an *APIError whose Temporary
	// is true). The request may be retried with the same idempotency key; a
	// route answers 502 or 503, not a 4xx.
	ErrStripeUnavailable = errors.New("stripe: Stripe unavailable")
	// ErrMalformedResponse: a 2xx answer that is larger than
	// MaxResponseBytes, is not JSON that toolgate may decode (see
	// safejson.Check), or is not a Checkout Session (no id starting with
	// "cs_", an amount out of range, a currency that is not three letters).
	ErrMalformedResponse = errors.New("stripe: malformed response")
)

// Client calls Stripe's REST API. The zero value is unusable: SecretKey is
// required. A Client is safe for concurrent use.
type Client struct {
	// SecretKey is sent as "Authorization: Bearer <SecretKey>". No error
	// the Client returns contains it.
	SecretKey string
	// BaseURL is the API's origin, without a trailing path; "" means
	// DefaultBaseURL. Tests point it at stripe-mock.
	BaseURL string
	// Send sends one HTTP request and returns its response. Nil means
	// http.DefaultClient.Do natively; in js/wasm it is required (the worker
	// passes its fetch), so that net/http's client is never linked there.
	Send func(*http.Request) (*http.Response, error)
}

// Session is the part of a created Checkout Session a top-up needs.
// AmountTotal is 0 and Currency "" when Stripe's answer has none (null);
// Currency is upper-case. URL is where the customer pays ("" if Stripe sent
// none). ExpiresAt is the zero time when absent.
type Session struct {
	ID                string
	URL               string
	Status            string // "open", "complete" or "expired"
	PaymentStatus     string // "paid", "unpaid" or "no_payment_required"
	AmountTotal       int64
	Currency          string
	ClientReferenceID string
	ExpiresAt         time.Time
}

// APIError is a non-2xx answer from Stripe, from its error envelope
// {"error":{"type","code","message","param"}}. Type and Message are empty
// when the body is no such envelope (a proxy's HTML page, say). Message
// never contains the Client's secret key (it is replaced by "[redacted]").
type APIError struct {
	Status    int    // the HTTP status
	Type      string // e.g. "invalid_request_error", "card_error", "api_error", "idempotency_error"
	Code      string // e.g. "parameter_invalid_integer"; often empty
	Message   string
	Param     string // the form parameter at fault, if any
	RequestID string // the Request-Id header, for Stripe's support
}

// Error describes the answer without the secret key.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("stripe: HTTP " + strconv.Itoa(e.Status))
	if e.Type != "" {
		b.WriteString(" " + e.Type)
	}
	if e.Code != "" {
		b.WriteString(" (" + e.Code + ")")
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Param != "" {
		b.WriteString(" [param " + e.Param + "]")
	}
	if e.RequestID != "" {
		b.WriteString(" [request " + e.RequestID + "]")
	}
	return b.String()
}

// Temporary reports whether the same request may succeed later: 429 (rate
// limited), 5xx, and 409, which Stripe answers while a request with the
// same idempotency key is still in flight (stripe-go retries it too).
func (e *APIError) Temporary() bool {
	return e.Status == http.StatusConflict || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// Is makes a temporary APIError match ErrStripeUnavailable.
func (e *APIError) Is(target error) bool {
	return target == ErrStripeUnavailable && e.Temporary()
}

// CreateCheckoutSession creates the Checkout Session of p (see
// CheckoutSessionForm) with POST {BaseURL}/v1/checkout/sessions, sending
// idempotencyKey (see IdempotencyKey) as the Idempotency-Key: Stripe
// answers a repeated key with the session it created the first time, so a
// retry never makes a second one.
//
// Before sending anything it returns ErrInvalidCheckoutParams (for p, or
// for a key that is empty or over MaxIdempotencyKeyBytes), or an error for
// a Client without SecretKey (or, in js/wasm, without Send). After, it
// returns ErrStripeUnavailable (wrapped), an *APIError for any other
// non-2xx answer, ErrMalformedResponse, or ctx's error as soon as ctx ends,
// even if Send does not honour ctx (the request is then left to finish
// on its own).
func (c *Client) CreateCheckoutSession(ctx context.Context, p CheckoutSessionParams, idempotencyKey string) (Session, error) {
	const op = "stripe: create checkout session: "
	form, err := CheckoutSessionForm(p)
	if err != nil {
		return Session{}, fmt.Errorf(op+"%w", err)
	}
	if idempotencyKey == "" || len(idempotencyKey) > MaxIdempotencyKeyBytes {
		return Session{}, fmt.Errorf(op+"%w: the idempotency key must have 1 to %d bytes", ErrInvalidCheckoutParams, MaxIdempotencyKeyBytes)
	}
	body, err := c.post(ctx, "/v1/checkout/sessions", form.Encode(), idempotencyKey)
	if err != nil {
		return Session{}, fmt.Errorf(op+"%w", err)
	}
	s, err := decodeSession(body)
	if err != nil {
		return Session{}, fmt.Errorf(op+"%w: %s", ErrMalformedResponse, err)
	}
	return s, nil
}

// post sends one form-encoded POST and returns the body of a 2xx answer. It
// returns when ctx ends even if the send function does not honour ctx.
func (c *Client) post(ctx context.Context, path, form, idempotencyKey string) ([]byte, error) {
	if c.SecretKey == "" {
		return nil, errors.New("no secret key")
	}
	send := c.Send
	if send == nil {
		send = defaultSend
	}
	if send == nil {
		return nil, errors.New("no send function, which this build requires")
	}
	base := c.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+path, strings.NewReader(form))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.SecretKey)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Idempotency-Key", idempotencyKey)
	req.Header.Set("Stripe-Version", APIVersion)

	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		b, err := c.roundTrip(send, req)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.body, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) roundTrip(send func(*http.Request) (*http.Response, error), req *http.Request) ([]byte, error) {
	res, err := send(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("%w: %s", ErrStripeUnavailable, c.redact(err.Error()))
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, MaxResponseBytes+1))
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("%w: read answer: %s", ErrStripeUnavailable, c.redact(err.Error()))
	}
	if res.StatusCode/100 == 2 {
		if len(b) > MaxResponseBytes {
			return nil, fmt.Errorf("%w: answer larger than %d bytes", ErrMalformedResponse, MaxResponseBytes)
		}
		return b, nil
	}
	return nil, c.apiError(res, b)
}

// apiError decodes Stripe's error envelope from a non-2xx answer; a body
// that is too large, too deep or no envelope leaves only the status and the
// request id.
func (c *Client) apiError(res *http.Response, b []byte) *APIError {
	e := &APIError{Status: res.StatusCode, RequestID: res.Header.Get("Request-Id")}
	if len(b) > MaxResponseBytes || safejson.Check(b, safejson.MaxDepth) != "" {
		return e
	}
	var env struct {
		Error struct {
			Type    string `json:"type"`
			Code    string `json:"code"`
			Message string `json:"message"`
			Param   string `json:"param"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil {
		e.Type, e.Code, e.Param = env.Error.Type, env.Error.Code, env.Error.Param
		e.Message = c.redact(env.Error.Message)
	}
	return e
}

// redact removes the secret key from s: stripe-mock, for one, quotes a
// refused Authorization header back.
func (c *Client) redact(s string) string {
	if c.SecretKey == "" {
		return s
	}
	return strings.ReplaceAll(s, c.SecretKey, "[redacted]")
}

type wireSession struct {
	ID                string  `json:"id"`
	Object            string  `json:"object"`
	URL               *string `json:"url"`
	Status            *string `json:"status"`
	PaymentStatus     string  `json:"payment_status"`
	AmountTotal       *int64  `json:"amount_total"`
	Currency          *string `json:"currency"`
	ClientReferenceID *string `json:"client_reference_id"`
	ExpiresAt         int64   `json:"expires_at"`
}

// decodeSession decodes a created Checkout Session, refusing anything that
// is not one.
func decodeSession(b []byte) (Session, error) {
	if reason := safejson.Check(b, safejson.MaxDepth); reason != "" {
		return Session{}, errors.New(reason)
	}
	var w wireSession
	if err := json.Unmarshal(b, &w); err != nil {
		return Session{}, err
	}
	if !strings.HasPrefix(w.ID, "cs_") {
		return Session{}, fmt.Errorf("id %q is not a Checkout Session's", w.ID)
	}
	if w.Object != "" && w.Object != "checkout.session" {
		return Session{}, fmt.Errorf("object is a %q, not a \"checkout.session\"", w.Object)
	}
	s := Session{ID: w.ID, PaymentStatus: w.PaymentStatus}
	if w.URL != nil {
		s.URL = *w.URL
	}
	if w.Status != nil {
		s.Status = *w.Status
	}
	if w.AmountTotal != nil {
		s.AmountTotal = *w.AmountTotal
	}
	if err := checkAmount("amount_total", s.AmountTotal); err != nil {
		return Session{}, err
	}
	if w.Currency != nil {
		cur, err := upperCurrency(*w.Currency)
		if err != nil {
			return Session{}, err
		}
		s.Currency = cur
	}
	if w.ClientReferenceID != nil {
		s.ClientReferenceID = *w.ClientReferenceID
	}
	if w.ExpiresAt > 0 {
		s.ExpiresAt = time.Unix(w.ExpiresAt, 0).UTC()
	}
	return s, nil
}
