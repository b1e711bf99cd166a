//go:build !js

package stripe_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/pay/stripe"
	"github.com/toolgate/toolgate-go/handler/pay/stripe/stripemock"
)

const secretKey = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"

// captured is what a wrapping send function saw of each request.
type captured struct {
	mu   sync.Mutex
	reqs []capturedRequest
}

type capturedRequest struct {
	method, path string
	header       http.Header
	body         string
}

// wrap returns a send function that records each request, then passes it
// to send.
func (c *captured) wrap(send func(*http.Request) (*http.Response, error)) func(*http.Request) (*http.Response, error) {
	return func(req *http.Request) (*http.Response, error) {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(strings.NewReader(string(b)))
		c.mu.Lock()
		c.reqs = append(c.reqs, capturedRequest{req.Method, req.URL.Path, req.Header.Clone(), string(b)})
		c.mu.Unlock()
		return send(req)
	}
}

func (c *captured) all() []capturedRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]capturedRequest(nil), c.reqs...)
}

// TestClientAgainstStripeMock runs the client against Stripe's mock API
// server, which validates each request against Stripe's OpenAPI document.
func TestClientAgainstStripeMock(t *testing.T) {
	t.Parallel()
	base := stripemock.Start(t)

	t.Run("creates a session", func(t *testing.T) {
		t.Parallel()
		var seen captured
		c := &stripe.Client{SecretKey: secretKey, BaseURL: base, Send: seen.wrap(http.DefaultClient.Do)}
		key := stripe.IdempotencyKey("agent 7", "order-42")
		s, err := c.CreateCheckoutSession(context.Background(), validParams(), key)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(s.ID, "cs_"), s.ID)
		require.True(t, strings.HasPrefix(s.URL, "https://checkout.stripe.com/"), s.URL)
		require.Equal(t, "open", s.Status)
		require.Equal(t, "unpaid", s.PaymentStatus)
		require.Equal(t, "tu_01JF3Q8Z", s.ClientReferenceID, "stripe-mock echoes the parameter")
		require.False(t, s.ExpiresAt.IsZero())

		reqs := seen.all()
		require.Len(t, reqs, 1)
		r := reqs[0]
		require.Equal(t, http.MethodPost, r.method)
		require.Equal(t, "/v1/checkout/sessions", r.path)
		require.Equal(t, "Bearer "+secretKey, r.header.Get("Authorization"))
		require.Equal(t, key, r.header.Get("Idempotency-Key"))
		require.Equal(t, stripe.APIVersion, r.header.Get("Stripe-Version"))
		require.Equal(t, "application/x-www-form-urlencoded", r.header.Get("Content-Type"))
		form, err := stripe.CheckoutSessionForm(validParams())
		require.NoError(t, err)
		require.Equal(t, form.Encode(), r.body)
	})

	t.Run("a form Stripe refuses is an APIError", func(t *testing.T) {
		t.Parallel()
		// stripe-mock validates the form against Stripe's OpenAPI
		// document (types, enums, unknown parameters; not lengths).
		// CheckoutSessionForm never writes an invalid mode, so a send
		// function that rewrites it stands in for a broken encoder.
		var seen captured
		rewrite := func(req *http.Request) (*http.Response, error) {
			b, err := io.ReadAll(req.Body)
			if err != nil {
				return nil, err
			}
			form, err := url.ParseQuery(string(b))
			if err != nil {
				return nil, err
			}
			form.Set("mode", "instalments")
			req.Body = io.NopCloser(strings.NewReader(form.Encode()))
			req.ContentLength = int64(len(form.Encode()))
			return http.DefaultClient.Do(req)
		}
		c := &stripe.Client{SecretKey: secretKey, BaseURL: base, Send: seen.wrap(rewrite)}
		_, err := c.CreateCheckoutSession(context.Background(), validParams(), "k-1")
		var apiErr *stripe.APIError
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusBadRequest, apiErr.Status)
		require.Equal(t, "invalid_request_error", apiErr.Type)
		require.Contains(t, apiErr.Message, "'mode'")
		require.Equal(t, "req_123", apiErr.RequestID, "stripe-mock's Request-Id")
		require.False(t, apiErr.Temporary())
		require.NotErrorIs(t, err, stripe.ErrStripeUnavailable)
		require.Contains(t, seen.all()[0].body, "mode=payment", "the client itself sent a valid mode")
	})

	t.Run("the secret key never shows in an error", func(t *testing.T) {
		t.Parallel()
		// stripe-mock refuses live keys and quotes the Authorization
		// header back in its message.
		const live = "sk_live_51HxYzSECRETdoNotLeak0000"
		c := &stripe.Client{SecretKey: live, BaseURL: base}
		_, err := c.CreateCheckoutSession(context.Background(), validParams(), "k-1")
		var apiErr *stripe.APIError
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusUnauthorized, apiErr.Status)
		require.Contains(t, apiErr.Message, "[redacted]")
		require.NotContains(t, err.Error(), live)
		require.NotContains(t, err.Error(), "SECRET")
	})

	t.Run("a cancelled context", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		c := &stripe.Client{SecretKey: secretKey, BaseURL: base}
		_, err := c.CreateCheckoutSession(ctx, validParams(), "k-1")
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, stripe.ErrStripeUnavailable)
	})
}

// TestClientRefusesBeforeSending checks the arguments that never reach
// Stripe.
func TestClientRefusesBeforeSending(t *testing.T) {
	t.Parallel()
	var sent atomic.Int32
	send := func(*http.Request) (*http.Response, error) {
		sent.Add(1)
		return nil, errors.New("must not be called")
	}
	c := &stripe.Client{SecretKey: secretKey, Send: send}
	bad := validParams()
	bad.Amount = 0
	_, err := c.CreateCheckoutSession(context.Background(), bad, "k-1")
	require.ErrorIs(t, err, stripe.ErrInvalidCheckoutParams)
	_, err = c.CreateCheckoutSession(context.Background(), validParams(), "")
	require.ErrorIs(t, err, stripe.ErrInvalidCheckoutParams, "no idempotency key: a retry could pay twice")
	_, err = c.CreateCheckoutSession(context.Background(), validParams(), strings.Repeat("k", stripe.MaxIdempotencyKeyBytes+1))
	require.ErrorIs(t, err, stripe.ErrInvalidCheckoutParams)
	_, err = (&stripe.Client{Send: send}).CreateCheckoutSession(context.Background(), validParams(), "k-1")
	require.ErrorContains(t, err, "no secret key")
	require.Zero(t, sent.Load())
}

func TestClientSendFails(t *testing.T) {
	t.Parallel()
	c := &stripe.Client{SecretKey: secretKey, Send: func(req *http.Request) (*http.Response, error) {
		return nil, errors.New("dial tcp: connection refused (" + req.Header.Get("Authorization") + ")")
	}}
	_, err := c.CreateCheckoutSession(context.Background(), validParams(), "k-1")
	require.ErrorIs(t, err, stripe.ErrStripeUnavailable)
	require.ErrorContains(t, err, "connection refused")
	require.NotContains(t, err.Error(), secretKey)
	var apiErr *stripe.APIError
	require.False(t, errors.As(err, &apiErr), "no answer, no APIError")

	// A real connection that fails: nothing listens on the closed server.
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	c = &stripe.Client{SecretKey: secretKey, BaseURL: srv.URL}
	_, err = c.CreateCheckoutSession(context.Background(), validParams(), "k-1")
	require.ErrorIs(t, err, stripe.ErrStripeUnavailable)
}

// TestClientSendIgnoresContext checks that the call returns when ctx ends
// even if the send function (the worker's fetch) does not watch ctx.
func TestClientSendIgnoresContext(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	c := &stripe.Client{SecretKey: secretKey, Send: func(*http.Request) (*http.Response, error) {
		<-release
		return nil, errors.New("released")
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.CreateCheckoutSession(ctx, validParams(), "k-1")
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// fake answers every request with status, body and a Request-Id; an
// injected fault, not a stand-in for Stripe.
func fake(t *testing.T, status int, body string) *stripe.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Request-Id", "req_fake")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return &stripe.Client{SecretKey: secretKey, BaseURL: srv.URL + "/"}
}

func TestClientErrorAnswers(t *testing.T) {
	t.Parallel()
	envelope := func(typ, code, msg, param string) string {
		return `{"error":{"type":"` + typ + `","code":"` + code + `","message":"` + msg + `","param":"` + param + `"}}`
	}
	tests := map[string]struct {
		status    int
		body      string
		want      stripe.APIError
		temporary bool
	}{
		"500": {500, envelope("api_error", "", "Something went wrong on Stripe's end.", ""),
			stripe.APIError{Status: 500, Type: "api_error", Message: "Something went wrong on Stripe's end.", RequestID: "req_fake"}, true},
		"503 from a proxy, no envelope": {503, "<html>Service Unavailable</html>",
			stripe.APIError{Status: 503, RequestID: "req_fake"}, true},
		"429": {429, envelope("invalid_request_error", "rate_limit", "Too many requests hit the API too quickly.", ""),
			stripe.APIError{Status: 429, Type: "invalid_request_error", Code: "rate_limit", Message: "Too many requests hit the API too quickly.", RequestID: "req_fake"}, true},
		"409 while the same key is in flight": {409, envelope("idempotency_error", "", "There is currently another in-progress request using this Stripe API key.", ""),
			stripe.APIError{Status: 409, Type: "idempotency_error", Message: "There is currently another in-progress request using this Stripe API key.", RequestID: "req_fake"}, true},
		"400 with a param": {400, envelope("invalid_request_error", "parameter_invalid_integer", "Invalid integer: abc", "line_items[0][price_data][unit_amount]"),
			stripe.APIError{Status: 400, Type: "invalid_request_error", Code: "parameter_invalid_integer", Message: "Invalid integer: abc", Param: "line_items[0][price_data][unit_amount]", RequestID: "req_fake"}, false},
		"400 reusing a key with other parameters": {400, envelope("idempotency_error", "", "Keys for idempotent requests can only be used with the same parameters they were first used with.", ""),
			stripe.APIError{Status: 400, Type: "idempotency_error", Message: "Keys for idempotent requests can only be used with the same parameters they were first used with.", RequestID: "req_fake"}, false},
		"500 with a deep body": {500, strings.Repeat("[", 100000),
			stripe.APIError{Status: 500, RequestID: "req_fake"}, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := fake(t, tc.status, tc.body).CreateCheckoutSession(context.Background(), validParams(), "k-1")
			var apiErr *stripe.APIError
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, tc.want, *apiErr)
			require.Equal(t, tc.temporary, apiErr.Temporary())
			require.Equal(t, tc.temporary, errors.Is(err, stripe.ErrStripeUnavailable))
			require.ErrorContains(t, err, "HTTP ")
		})
	}
}

func TestClientDecodesSession(t *testing.T) {
	t.Parallel()
	s, err := fake(t, 200, `{"id":"cs_test_a1","object":"checkout.session","url":"https://checkout.stripe.com/c/pay/cs_test_a1",
		"status":"open","payment_status":"unpaid","amount_total":2500,"currency":"usd","client_reference_id":"tu_1",
		"expires_at":1764658500,"metadata":{"caller":"agent-7"},"line_items":{"object":"list","data":[]}}`).
		CreateCheckoutSession(context.Background(), validParams(), "k-1")
	require.NoError(t, err)
	require.Equal(t, stripe.Session{
		ID: "cs_test_a1", URL: "https://checkout.stripe.com/c/pay/cs_test_a1", Status: "open", PaymentStatus: "unpaid",
		AmountTotal: 2500, Currency: "USD", ClientReferenceID: "tu_1", ExpiresAt: time.Unix(1764658500, 0).UTC(),
	}, s)

	s, err = fake(t, 200, `{"id":"cs_test_a2","object":"checkout.session","url":null,"amount_total":null,"currency":null,"client_reference_id":null}`).
		CreateCheckoutSession(context.Background(), validParams(), "k-1")
	require.NoError(t, err)
	require.Equal(t, stripe.Session{ID: "cs_test_a2"}, s, "absent amounts, currency, url and expiry are zero")
}

func TestClientMalformedAnswers(t *testing.T) {
	t.Parallel()
	huge := `{"id":"cs_test_1","padding":"` + strings.Repeat("x", stripe.MaxResponseBytes) + `"}`
	tests := map[string]string{
		"larger than MaxResponseBytes": huge,
		"deep":                         `{"id":"cs_test_1","x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`,
		"not JSON":                     `<html>ok</html>`,
		"lone surrogate":               `{"id":"cs_test_1","url":"\ud800"}`,
		"no id":                        `{"object":"checkout.session"}`,
		"not a session id":             `{"id":"pi_123","object":"payment_intent"}`,
		"another object":               `{"id":"cs_test_1","object":"payment_intent"}`,
		"negative amount":              `{"id":"cs_test_1","amount_total":-1}`,
		"amount over 2^53-1":           `{"id":"cs_test_1","amount_total":9007199254740992}`,
		"currency not three letters":   `{"id":"cs_test_1","currency":"usdc"}`,
		"empty":                        ``,
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := fake(t, 200, body).CreateCheckoutSession(context.Background(), validParams(), "k-1")
			require.ErrorIs(t, err, stripe.ErrMalformedResponse)
			require.NotErrorIs(t, err, stripe.ErrStripeUnavailable)
		})
	}
}
