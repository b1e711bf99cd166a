package handler

import (
	"errors"
	"net/http"
	"time"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/pay"
	"github.com/toolgate/toolgate-go/handler/pay/x402"
	"github.com/toolgate/toolgate-go/handler/problem"
)

// X402Config enables calls paid per request with x402 for the tools whose
// catalog entry has an "x402" price.
type X402Config struct {
	// FacilitatorURL is the facilitator's base URL (FACILITATOR_URL);
	// empty disables x402 (a catalog with x402 prices then fails New).
	FacilitatorURL string
	// Authorization is sent to the facilitator as the Authorization
	// header's value (secret FACILITATOR_AUTHORIZATION); "" sends none.
	Authorization string
	// Send sends the facilitator's requests: the worker's fetch (required
	// there), or nil natively for http.DefaultClient.Do.
	Send func(*http.Request) (*http.Response, error)
	// Timeout bounds each verify and settle; zero means
	// x402.DefaultTimeout (a settle that runs out is settled again later).
	Timeout time.Duration
}

// perCall is the x402 rail, or nil when no facilitator is configured.
func (c Config) perCall() pay.PerCall {
	if c.X402.FacilitatorURL == "" {
		return nil
	}
	return &x402.Rail{Facilitator: &x402.Facilitator{URL: c.X402.FacilitatorURL, SendFunc: c.X402.Send,
		Authorization: c.X402.Authorization}, Timeout: c.X402.Timeout}
}

// resourceOf names the paid resource of a call request.
func resourceOf(r *http.Request, t catalog.Tool) x402.ResourceInfo {
	scheme := "https"
	if r.TLS == nil && (r.URL.Scheme == "http" || r.Host == "" || isLoopback(r.Host)) {
		scheme = "http"
	}
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	return x402.ResourceInfo{URL: scheme + "://" + host + r.URL.Path, Description: t.Description, MimeType: "application/json"}
}

func isLoopback(host string) bool {
	for _, p := range []string{"127.0.0.1", "localhost", "[::1]"} {
		if len(host) >= len(p) && host[:len(p)] == p {
			return true
		}
	}
	return false
}

// writeCallError writes a call's error. A 402 for a tool sold per call
// also carries its x402 offer: the PAYMENT-REQUIRED header and the "x402"
// member (the same PaymentRequired document), with the reason a presented
// payment was refused.
func (s *server) writeCallError(w http.ResponseWriter, r *http.Request, tool string, err error) {
	p := problem.For(err)
	t, ok := s.engine.Catalog().Tool(tool)
	if p.Status != http.StatusPaymentRequired || !ok || t.X402 == nil || !s.perCall {
		problem.WriteProblem(w, p)
		return
	}
	reason := ""
	var pr *engine.PaymentRequiredError
	if errors.As(err, &pr) {
		reason = pr.Reason
	}
	doc := x402.Required(resourceOf(r, t), x402.Offer(*t.X402), reason)
	if h, err := x402.Encode(doc); err == nil {
		w.Header().Set(x402.HeaderPaymentRequired, h)
	}
	if p.Extensions == nil {
		p.Extensions = map[string]any{}
	}
	p.Extensions["x402"] = doc
	problem.WriteProblem(w, p)
}

// callPerCall serves a call that presents an x402 payment (PAYMENT-SIGNATURE,
// or v1's X-PAYMENT): the payment is matched to the tool's offer here, and
// the engine binds, verifies, executes and settles it. The answer carries
// PAYMENT-RESPONSE (and X-PAYMENT-RESPONSE for a v1 payment).
func (s *server) callPerCall(w http.ResponseWriter, r *http.Request, t catalog.Tool, payment x402.PaymentPayload, perr error) {
	ctx := r.Context()
	e := s.engine
	start := e.Now()
	reject := func(err error) {
		e.LogRejected(ctx, "", t.Name, start, err)
		s.writeCallError(w, r, t.Name, err)
	}
	if perr != nil {
		reject(&engine.PaymentRequiredError{X402: t.X402, Reason: x402.ReasonFor(perr), Detail: perr.Error()})
		return
	}
	var key string
	if len(r.Header.Values("Idempotency-Key")) > 0 {
		k, err := engine.ParseIdempotencyKey(r.Header.Values("Idempotency-Key"))
		if err != nil {
			reject(err)
			return
		}
		key = k
	}
	body, err := readBody(w, r, s.maxBody)
	if err != nil {
		reject(err)
		return
	}
	pp, err := x402.PaymentFor(payment, x402.Offer(*t.X402), e.Now())
	if errors.Is(err, x402.ErrExpired) {
		// It may have paid for this key already: the engine replays, or
		// refuses it.
		pp, err = x402.PaymentForExpired(payment, x402.Offer(*t.X402))
	}
	if err != nil {
		reject(&engine.PaymentRequiredError{X402: t.X402, Reason: x402.ReasonFor(err), Detail: err.Error()})
		return
	}
	res, err := e.Call(ctx, engine.CallRequest{Tool: t.Name, Key: key, Input: body, Header: r.Header, Payment: &pp})
	if err != nil {
		s.writeCallError(w, r, t.Name, err)
		return
	}
	h := w.Header()
	if res.Payment != nil {
		receipt := x402.Receipt(pp, string(res.Payment.State), res.Payment.Transaction)
		if v, err := x402.Encode(receipt); err == nil {
			h.Set(x402.HeaderPaymentResponse, v)
		}
		if payment.X402Version == 1 {
			// v1 names the network as v1 does ("base-sepolia", not CAIP-2).
			if n, ok := x402.NetworkToV1(receipt.Network); ok {
				receipt.Network = n
			}
			if v, err := x402.Encode(receipt); err == nil {
				h.Set(x402.HeaderPaymentRespV1, v)
			}
		}
	}
	h.Set("Content-Type", res.ContentType)
	h.Set("Cache-Control", "no-store")
	if res.Replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(res.StatusCode)
	_, _ = w.Write(res.Body)
}
