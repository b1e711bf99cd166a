package x402

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/toolgate/toolgate-go/handler/pay"
	"github.com/toolgate/toolgate-go/handler/safejson"
)

// MaxAnswerBytes bounds a facilitator's answer body that Facilitator reads;
// a longer answer is unreadable (an unknown outcome for a settle).
const MaxAnswerBytes = 64 << 10

var (
	// ErrFacilitatorUnavailable means verify or supported got no usable
	// answer: a network error, a timeout, a 5xx or 429, or a body that is
	// not the expected document. Nothing moved; the same request may be
	// retried. It wraps pay.ErrUnavailable.
	ErrFacilitatorUnavailable = fmt.Errorf("%w: x402 facilitator", pay.ErrUnavailable)
	// ErrSettlementUnknown means a settle's outcome is not known: a network
	// error, a timeout (or the caller's context ending), a 5xx, a body that
	// is not a SettleResponse, or the facilitator's own "settlement_pending".
	// The payment may have moved: the caller must not answer a fresh 402
	// (the payer would sign again and pay twice) but record the settlement
	// as pending and settle the same payload again later, until it succeeds,
	// is rejected, or the authorization expires. It does not wrap
	// pay.ErrUnavailable, whose promise is that nothing moved.
	ErrSettlementUnknown = errors.New("x402: settlement outcome unknown")
	// ErrPaymentRejected is matched (errors.Is) by every *RejectedError.
	ErrPaymentRejected = errors.New("x402: payment rejected by the facilitator")
)

// RejectedError is a facilitator's definitive no: a VerifyResponse with
// isValid false, or a SettleResponse with success false, whatever the HTTP
// status that carried it. For a settle, nothing moved (the payment can't
// be settled as it is); a retry of the same payload gets the same answer,
// except after a lost success, when a retry answers
// ReasonNonceAlreadyUsed.
type RejectedError struct {
	Op     string // "verify" or "settle"
	Status int    // the HTTP status of the answer
	Reason string // the facilitator's reason code (Reason* constants); never ""
	Payer  string // the payer, if the facilitator said
}

// Error implements error.
func (e *RejectedError) Error() string {
	return fmt.Sprintf("x402: facilitator rejected the payment at %s (%d): %s", e.Op, e.Status, e.Reason)
}

// Is makes errors.Is(err, ErrPaymentRejected) true.
func (e *RejectedError) Is(target error) bool { return target == ErrPaymentRejected }

// Facilitator is a client of an x402 facilitator's HTTP API (POST /verify,
// POST /settle, GET /supported). It sends through SendFunc, the worker's
// fetch seam, so it carries no HTTP client of its own.
type Facilitator struct {
	// URL is the facilitator's base URL (FACILITATOR_URL), without the
	// endpoint: "https://x402.org/facilitator" posts to
	// "https://x402.org/facilitator/verify".
	URL string
	// SendFunc sends a request: the worker's fetch (required there), or
	// nil natively for http.DefaultClient.Do. Timeouts come from the
	// request's context.
	SendFunc func(*http.Request) (*http.Response, error)
	// Authorization is sent as the Authorization header's value (for
	// example "Bearer <secret>"); "" sends none.
	Authorization string
}

// Verify asks the facilitator whether p pays for req, before the paid
// action runs. A version 1 payment is sent in v2 form, with Accepted set to
// req (its signed authorization does not depend on the envelope).
//
// It returns the answer and nil if the payment is valid; a *RejectedError
// (ErrPaymentRejected) with the facilitator's reason if it is not; or
// ErrFacilitatorUnavailable, wrapped with the cause, if there was no
// usable answer. Verify never moves money.
func (f *Facilitator) Verify(ctx context.Context, p PaymentPayload, req PaymentRequirements) (VerifyResponse, error) {
	var vr VerifyResponse
	status, body, err := f.post(ctx, "/verify", p, req)
	if err != nil {
		return vr, fmt.Errorf("%w: verify: %v", ErrFacilitatorUnavailable, err)
	}
	if err := decodeAnswer(body, &vr, "isValid"); err != nil || status >= 500 || status == http.StatusTooManyRequests {
		return vr, fmt.Errorf("%w: verify: status %d: %s", ErrFacilitatorUnavailable, status, answerError(err))
	}
	if !vr.IsValid {
		return vr, &RejectedError{Op: "verify", Status: status, Reason: orDefault(vr.InvalidReason, ReasonUnexpectedVerify), Payer: vr.Payer}
	}
	if status != http.StatusOK {
		return vr, fmt.Errorf("%w: verify: status %d with isValid true", ErrFacilitatorUnavailable, status)
	}
	return vr, nil
}

// Settle asks the facilitator to settle p for req: call it only after the
// paid action succeeded, because a settled payment cannot be taken back.
// Settling the same payload again is safe: the chain refuses its nonce a
// second time.
//
// It returns the answer and nil if the payment settled (Transaction holds
// the transaction hash); a *RejectedError (ErrPaymentRejected) with the
// facilitator's reason if it definitively did not; or ErrSettlementUnknown,
// wrapped with the cause, if the outcome is unknown: then the returned
// answer is the zero value, or the "settlement_pending" answer with its
// transaction hash if the facilitator gave one.
func (f *Facilitator) Settle(ctx context.Context, p PaymentPayload, req PaymentRequirements) (SettleResponse, error) {
	var sr SettleResponse
	status, body, err := f.post(ctx, "/settle", p, req)
	if err != nil {
		return sr, fmt.Errorf("%w: %v", ErrSettlementUnknown, err)
	}
	if err := decodeAnswer(body, &sr, "success"); err != nil || status >= 500 {
		return SettleResponse{}, fmt.Errorf("%w: status %d: %s", ErrSettlementUnknown, status, answerError(err))
	}
	switch {
	case sr.Success && status == http.StatusOK:
		return sr, nil
	case sr.Success:
		return SettleResponse{}, fmt.Errorf("%w: status %d with success true", ErrSettlementUnknown, status)
	case sr.ErrorReason == ReasonSettlementPending:
		return sr, fmt.Errorf("%w: the facilitator answered %s", ErrSettlementUnknown, ReasonSettlementPending)
	}
	return sr, &RejectedError{Op: "settle", Status: status, Reason: orDefault(sr.ErrorReason, ReasonUnexpectedSettle), Payer: sr.Payer}
}

// Supported returns the facilitator's GET /supported, or
// ErrFacilitatorUnavailable.
func (f *Facilitator) Supported(ctx context.Context) (SupportedResponse, error) {
	var sr SupportedResponse
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.endpoint("/supported"), nil)
	if err != nil {
		return sr, fmt.Errorf("%w: supported: %v", ErrFacilitatorUnavailable, err)
	}
	status, body, err := f.do(req)
	if err != nil {
		return sr, fmt.Errorf("%w: supported: %v", ErrFacilitatorUnavailable, err)
	}
	if err := decodeAnswer(body, &sr, "kinds"); err != nil || status != http.StatusOK {
		return SupportedResponse{}, fmt.Errorf("%w: supported: status %d: %s", ErrFacilitatorUnavailable, status, answerError(err))
	}
	return sr, nil
}

func (f *Facilitator) endpoint(path string) string { return strings.TrimRight(f.URL, "/") + path }

// post sends {x402Version, paymentPayload, paymentRequirements} to path.
func (f *Facilitator) post(ctx context.Context, path string, p PaymentPayload, req PaymentRequirements) (int, []byte, error) {
	if p.X402Version == 1 {
		resource := p.Resource
		p = PaymentPayload{X402Version: Version, Resource: resource, Accepted: req, Payload: p.Payload, Extensions: p.Extensions}
	}
	b, err := safejson.MarshalNoEscape(VerifyRequest{X402Version: p.X402Version, PaymentPayload: p, PaymentRequirements: req})
	if err != nil {
		return 0, nil, err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, f.endpoint(path), bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	r.Header.Set("Content-Type", "application/json")
	return f.do(r)
}

// do sends r and reads at most MaxAnswerBytes of the answer; a body cut
// short (the connection dropped) is an error.
func (f *Facilitator) do(r *http.Request) (int, []byte, error) {
	send := f.SendFunc
	if send == nil {
		send = defaultSend
	}
	if send == nil {
		return 0, nil, errors.New("no SendFunc")
	}
	r.Header.Set("Accept", "application/json")
	if f.Authorization != "" {
		r.Header.Set("Authorization", f.Authorization)
	}
	resp, err := send(r)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBytes+1))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("status %d, reading the answer: %w", resp.StatusCode, err)
	}
	if len(body) > MaxAnswerBytes {
		return resp.StatusCode, nil, fmt.Errorf("status %d, an answer over %d bytes", resp.StatusCode, MaxAnswerBytes)
	}
	return resp.StatusCode, body, nil
}

// decodeAnswer decodes a facilitator's JSON answer into v, and requires
// the field named required to be present (a body that merely parses, like
// {}, is not an answer).
func decodeAnswer(body []byte, v any, required string) error {
	if reason := safejson.Check(body, MaxDepth); reason != "" {
		return errors.New(reason)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	if _, ok := fields[required]; !ok {
		return fmt.Errorf("no %q in the answer", required)
	}
	return json.Unmarshal(body, v)
}

func answerError(err error) string {
	if err == nil {
		return "unexpected status"
	}
	return err.Error()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
