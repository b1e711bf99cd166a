// Package problem is the one mapping from errors (the engine's, the store's and the surfaces') to RFC 9457
// problem details, and the writer of application/problem+json answers.
package problem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/pay"
	"github.com/toolgate/toolgate-go/store"
)

// TypeBase prefixes every problem type URI; the suffix is a stable slug
// such as "insufficient-funds".
const TypeBase = engine.ProblemTypeBase

// Problem is an RFC 9457 problem detail. Extensions are extra members
// (price, balance, refunded, ...) written beside the standard ones.
type Problem struct {
	Type       string
	Title      string
	Status     int
	Detail     string
	Extensions map[string]any
	// RetryAfter, when positive, is sent as the Retry-After header (whole
	// seconds, rounded up) and as the "retryAfter" member.
	RetryAfter time.Duration
	// Allow, when set, is sent as the Allow header (405).
	Allow string
}

// MarshalJSON writes the standard members and the extensions as one object.
func (p Problem) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(p.Extensions)+5)
	for k, v := range p.Extensions {
		m[k] = v
	}
	m["type"] = p.Type
	m["title"] = p.Title
	m["status"] = p.Status
	if p.Detail != "" {
		m["detail"] = p.Detail
	}
	if p.RetryAfter > 0 {
		m["retryAfter"] = p.RetryAfterSeconds()
	}
	return json.Marshal(m)
}

// RetryAfterSeconds is RetryAfter in whole seconds, rounded up, at least 1:
// the value of the Retry-After header.
func (p Problem) RetryAfterSeconds() int {
	return max(1, int(math.Ceil(p.RetryAfter.Seconds())))
}

func newProblem(status int, slug, title, detail string) Problem {
	return Problem{Type: TypeBase + slug, Title: title, Status: status, Detail: detail}
}

// For is the one place that maps an error to an HTTP status and a problem.
// Unrecognised errors become a generic 500 that reveals nothing.
func For(err error) Problem {
	var (
		inputErr    *engine.InvalidInputError
		schemaErr   *engine.InputSchemaError
		badReq      *BadRequestError
		inProgress  *engine.InProgressError
		upstreamErr *engine.UpstreamError
		fundsErr    *store.InsufficientFundsError
		quotaErr    *engine.QuotaExhaustedError
		payReq      *engine.PaymentRequiredError
		topupErr    *engine.TopupError
		webhookErr  *WebhookError
		rejected    *pay.RejectedError
		storeErr    *engine.StoreError
		methodErr   *MethodNotAllowedError
		maxBytes    *http.MaxBytesError
	)
	switch {
	case errors.Is(err, engine.ErrInvalidIdempotencyKey):
		return newProblem(http.StatusBadRequest, "invalid-idempotency-key", "Invalid Idempotency-Key",
			err.Error()+"; send 1-255 printable ASCII characters in the Idempotency-Key header")
	case errors.As(err, &inputErr):
		return newProblem(http.StatusBadRequest, "invalid-json", "Invalid JSON input", inputErr.Reason)
	case errors.As(err, &schemaErr):
		return inputSchemaProblem(schemaErr)
	case errors.As(err, &badReq):
		return newProblem(http.StatusBadRequest, "invalid-request", "Invalid request", badReq.Reason)
	case errors.Is(err, store.ErrInvalidAmount), errors.Is(err, store.ErrUnknownCurrency):
		return newProblem(http.StatusBadRequest, "invalid-request", "Invalid request", err.Error())
	case errors.Is(err, engine.ErrUnauthorized):
		return newProblem(http.StatusUnauthorized, "unauthorized", "Unauthorized",
			"send a valid key as Authorization: Bearer <key>")
	case errors.As(err, &fundsErr):
		return fundsProblem(err, fundsErr)
	case errors.As(err, &quotaErr):
		// 429, not 402: money cannot buy more calls of a tool that has no
		// price; only the window's end can.
		p := newProblem(http.StatusTooManyRequests, "quota-exhausted", "Free quota exhausted",
			fmt.Sprintf("%s gives %d free calls per %s and this window's are used; nothing was executed; the quota resets at %s",
				quotaErr.Tool, quotaErr.Calls, quotaErr.Per, quotaErr.ResetsAt.UTC().Format(time.RFC3339)))
		p.Extensions = map[string]any{"quota": map[string]any{"calls": quotaErr.Calls, "per": string(quotaErr.Per),
			"remaining": 0, "resetsAt": quotaErr.ResetsAt.UTC().Format(time.RFC3339)}}
		p.RetryAfter = max(quotaErr.RetryAfter, time.Second)
		return p
	case errors.As(err, &payReq):
		detail := "this tool is paid per call with x402: sign a payment for the offer in the PAYMENT-REQUIRED header (also the x402 member) and send it in PAYMENT-SIGNATURE; retry with the same Idempotency-Key"
		if payReq.Reason != "" {
			detail = "the payment was refused (" + payReq.Reason + "): " + payReq.Detail + "; nothing was executed or settled; " + detail
		}
		p := newProblem(http.StatusPaymentRequired, "payment-required", "Payment required", detail)
		if payReq.Reason != "" {
			p.Extensions = map[string]any{"reason": payReq.Reason}
		}
		return p
	case errors.Is(err, store.ErrPaymentReused):
		return newProblem(http.StatusConflict, "payment-reused", "Payment already used",
			"this signed payment already pays for another Idempotency-Key; one payment pays for one call: sign a new one, or retry the first call with its own key")
	case errors.Is(err, engine.ErrPerCallDisabled):
		return newProblem(http.StatusBadRequest, "per-call-unavailable", "Not sold per call",
			err.Error()+"; this gateway or tool takes no x402 payment: call it with a caller key")
	case errors.Is(err, engine.ErrTopupsDisabled):
		return newProblem(http.StatusNotImplemented, "topups-disabled", "Top-ups not enabled",
			"this gateway sells no top-ups (its operator has not configured a payment provider); ask the operator for credit")
	case errors.Is(err, engine.ErrTopupNotFound):
		return newProblem(http.StatusNotFound, "topup-not-found", "Top-up not found", "you have no top-up with this id")
	case errors.Is(err, engine.ErrTopupKeyReused):
		return newProblem(http.StatusUnprocessableEntity, "idempotency-key-mismatch", "Idempotency-Key reused",
			"this Idempotency-Key was used for a top-up with another amount, currency or return URL; nothing was created")
	case errors.As(err, &topupErr):
		return newProblem(http.StatusBadRequest, "invalid-topup", "Invalid top-up", topupErr.Reason)
	case errors.As(err, &webhookErr):
		return newProblem(http.StatusBadRequest, "invalid-webhook", "Invalid webhook", webhookErr.Reason)
	case errors.Is(err, pay.ErrUnavailable):
		p := newProblem(http.StatusServiceUnavailable, "payment-provider-unavailable", "Payment provider unavailable",
			"the payment provider could not be reached; retry with the same Idempotency-Key (no second payment page is made)")
		p.RetryAfter = 2 * time.Second
		return p
	case errors.As(err, &rejected):
		return newProblem(http.StatusBadGateway, "payment-provider-rejected", "Payment provider refused",
			"the payment provider refused the top-up: "+rejected.Reason)
	case errors.Is(err, engine.ErrUnknownTool):
		return newProblem(http.StatusNotFound, "unknown-tool", "Unknown tool", err.Error())
	case errors.Is(err, engine.ErrUnknownCaller):
		return newProblem(http.StatusNotFound, "unknown-caller", "Unknown caller", err.Error())
	case errors.Is(err, engine.ErrKeyNotFound):
		return newProblem(http.StatusNotFound, "key-not-found", "Key not found", "the caller has no key with this id")
	case errors.Is(err, engine.ErrCapNotFound):
		return newProblem(http.StatusNotFound, "cap-not-found", "Cap not found",
			"the caller has no spending cap on this key in this currency; nothing was changed")
	case errors.Is(err, store.ErrTooManyKeys):
		p := newProblem(http.StatusConflict, "too-many-keys", "Too many keys",
			fmt.Sprintf("the caller holds %d valid keys, the most a caller may hold; revoke one to make room; nothing was created", store.MaxKeysPerCaller))
		p.Extensions = map[string]any{"maxKeys": store.MaxKeysPerCaller}
		return p
	case errors.Is(err, store.ErrRevoked):
		return newProblem(http.StatusConflict, "key-revoked", "Key revoked",
			"this key is revoked and stays revoked; create a new key instead")
	case errors.Is(err, ErrCallNotFound):
		return newProblem(http.StatusNotFound, "call-not-found", "Call not found",
			"you have no call under this Idempotency-Key")
	case errors.Is(err, ErrRouteNotFound):
		return newProblem(http.StatusNotFound, "not-found", "Not found", "no such route; see /openapi.json")
	case errors.As(err, &methodErr):
		p := newProblem(http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed",
			"this route accepts "+methodErr.Allow)
		p.Allow = methodErr.Allow
		return p
	case errors.As(err, &inProgress):
		p := newProblem(http.StatusConflict, "in-progress", "Call in progress",
			"another request with this Idempotency-Key is still running; retry with the same key to get its result")
		p.RetryAfter = inProgress.RetryAfter
		return p
	case errors.Is(err, engine.ErrLostLease), errors.Is(err, store.ErrFencedOut):
		p := newProblem(http.StatusConflict, "lost-lease", "Call taken over",
			"another attempt took this Idempotency-Key over; retry with the same key to get its result")
		p.RetryAfter = time.Second
		return p
	case errors.Is(err, store.ErrReferenceConflict):
		return newProblem(http.StatusConflict, "reference-conflict", "Reference conflict",
			"this credit reference was already used for a different credit")
	case errors.Is(err, store.ErrConflict):
		return newProblem(http.StatusConflict, "conflict", "Conflict", "the id is taken")
	case errors.Is(err, ErrBodyTooLarge), errors.As(err, &maxBytes):
		return newProblem(http.StatusRequestEntityTooLarge, "body-too-large", "Body too large", err.Error())
	case errors.Is(err, store.ErrFingerprintMismatch):
		return newProblem(http.StatusUnprocessableEntity, "idempotency-key-mismatch", "Idempotency-Key reused",
			"this Idempotency-Key was used with a different tool input; nothing was charged or executed")
	case errors.As(err, &upstreamErr):
		return upstreamProblem(upstreamErr)
	case errors.As(err, &storeErr), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		p := newProblem(http.StatusServiceUnavailable, "store-unavailable", "Service unavailable",
			"the gateway's store is unavailable; retry with the same Idempotency-Key")
		p.RetryAfter = time.Second
		return p
	}
	return newProblem(http.StatusInternalServerError, "internal", "Internal error", "the gateway failed unexpectedly")
}

// fundsProblem is the 402 of an insufficient balance: the price, the
// balance, the debt if any, the shortfall, and, when top-ups are enabled,
// the topUp member that says how to add money.
func fundsProblem(err error, fe *store.InsufficientFundsError) Problem {
	cur := fe.Currency
	amount := func(v int64) string { return store.FormatAmount(v, cur) }
	if c := fe.Cap; c != nil {
		return capProblem(fe, c)
	}
	detail := fmt.Sprintf("the call costs %s %s and the balance is %s %s", amount(fe.Required), cur, amount(fe.Balance), cur)
	if fe.Owed > 0 {
		detail = fmt.Sprintf("the call costs %s %s, the balance is %s %s and %s %s is owed (a top-up was refunded or disputed after it was spent); paid calls resume once a credit covers the debt",
			amount(fe.Required), cur, amount(fe.Balance), cur, amount(fe.Owed), cur)
	}
	p := newProblem(http.StatusPaymentRequired, "insufficient-funds", "Insufficient funds", detail+"; nothing was charged or executed")
	p.Extensions = map[string]any{
		"price":    amount(fe.Required),
		"balance":  amount(fe.Balance),
		"currency": cur,
	}
	if fe.Owed > 0 {
		p.Extensions["owed"] = amount(fe.Owed)
	}
	var pr *engine.PaymentRequiredError
	if !errors.As(err, &pr) {
		return p
	}
	p.Extensions["shortfall"] = amount(pr.Shortfall)
	if t := pr.TopUp; t != nil {
		p.Extensions["topUp"] = map[string]any{
			"method":   t.Method,
			"href":     t.Path,
			"currency": t.Currency,
			"minimum":  amount(t.Minimum),
			"maximum":  amount(t.Maximum),
		}
		p.Detail += fmt.Sprintf("; add at least %s %s with %s %s and retry with the same Idempotency-Key",
			amount(t.Minimum), cur, t.Method, t.Path)
	}
	return p
}

// capProblem is the 402 of a charge a spending cap refused: the limit
// member says which cap (the caller's, or a key's), its limit, what was
// spent in its window and when it resets.
func capProblem(fe *store.InsufficientFundsError, c *store.Cap) Problem {
	amount := func(v int64) string { return store.FormatAmount(v, fe.Currency) }
	whose := "the caller's"
	limit := map[string]any{"scope": "caller", "currency": fe.Currency, "limit": amount(c.Limit),
		"spent": amount(c.Spent), "remaining": amount(max(c.Limit-c.Spent, 0)), "reset": string(c.Reset)}
	if c.Key != store.AnyKey {
		whose = fmt.Sprintf("key %q's", c.Key)
		limit["scope"], limit["key"] = "key", c.Key
	}
	resets := "it never resets"
	if !c.ResetsAt.IsZero() {
		limit["resetsAt"] = c.ResetsAt.UTC().Format(time.RFC3339)
		resets = "it resets at " + c.ResetsAt.UTC().Format(time.RFC3339)
	}
	p := newProblem(http.StatusPaymentRequired, "insufficient-funds", "Spending cap reached",
		fmt.Sprintf("the call costs %s %s and would pass %s %s spending cap of %s %s (%s spent); nothing was charged or executed; %s",
			amount(fe.Required), fe.Currency, whose, c.Reset, amount(c.Limit), fe.Currency, amount(c.Spent), resets))
	p.Extensions = map[string]any{"price": amount(fe.Required), "balance": amount(fe.Balance), "currency": fe.Currency,
		"limit": limit}
	return p
}

// inputSchemaProblem is the 400 of an input that does not match the tool's
// inputSchema, with the violations as a member.
func inputSchemaProblem(e *engine.InputSchemaError) Problem {
	n := fmt.Sprintf("%d violations", len(e.Violations))
	switch {
	case e.Truncated:
		n = fmt.Sprintf("the first %d violations are listed", len(e.Violations))
	case len(e.Violations) == 1:
		n = "1 violation"
	}
	p := newProblem(http.StatusBadRequest, "invalid-input", "Input does not match the tool's schema",
		fmt.Sprintf("the input does not match the inputSchema of %q (%s); nothing was charged, stored or executed; "+
			"correct the input and retry, with the same Idempotency-Key if you like", e.Tool, n))
	p.Extensions = map[string]any{"violations": e.Violations}
	return p
}

func upstreamProblem(e *engine.UpstreamError) Problem {
	status, slug, title := http.StatusBadGateway, "upstream-failed", "Upstream failed"
	if e.Timeout {
		status, slug, title = http.StatusGatewayTimeout, "upstream-timeout", "Upstream timed out"
	}
	money := "the call was free"
	if e.QuotaReturned {
		money = "the call was free and was given back to your free quota"
	}
	if e.Price > 0 {
		price := store.FormatAmount(e.Price, e.Currency) + " " + e.Currency
		money = "the charge of " + price + " was refunded"
		if !e.Refunded {
			money = "the charge of " + price + " could not be refunded yet; it stays on this key and is not taken again"
		}
	}
	p := newProblem(status, slug, title, e.Reason+"; "+money+"; retry with the same Idempotency-Key")
	p.Extensions = map[string]any{"refunded": e.Refunded, "retryable": true}
	if e.Free {
		p.Extensions["tier"] = "free"
		p.Extensions["quotaReturned"] = e.QuotaReturned
	}
	if e.StatusCode != 0 {
		p.Extensions["upstreamStatus"] = e.StatusCode
	}
	if e.Refunded {
		p.Extensions["balance"] = store.FormatAmount(e.Balance, e.Currency)
		p.Extensions["currency"] = e.Currency
	}
	return p
}

// Write writes err as application/problem+json (see For), with Retry-After,
// Allow and WWW-Authenticate where the problem calls for them.
func Write(w http.ResponseWriter, err error) { WriteProblem(w, For(err)) }

// WriteProblem writes p as Write does: for a surface that adds members to
// the problem For made.
func WriteProblem(w http.ResponseWriter, p Problem) {
	body, mErr := json.Marshal(p)
	if mErr != nil {
		body = []byte(`{"type":"` + TypeBase + `internal","title":"Internal error","status":500}`)
		p.Status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.RetryAfterSeconds()))
	}
	if p.Allow != "" {
		h.Set("Allow", p.Allow)
	}
	if p.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="toolgate"`)
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}

// Errors of the HTTP surfaces, mapped by For.
var (
	// ErrBodyTooLarge means the request body is over the configured limit.
	ErrBodyTooLarge = errors.New("request body too large")
	// ErrCallNotFound means the caller has no record under that key.
	ErrCallNotFound = errors.New("call not found")
	// ErrRouteNotFound means no route matches the path.
	ErrRouteNotFound = errors.New("no such route")
)

// BadRequestError means a request (an admin body, a query parameter) is
// malformed or out of range.
type BadRequestError struct{ Reason string }

// Error implements error.
func (e *BadRequestError) Error() string { return "bad request: " + e.Reason }

// WebhookError means a payment provider's webhook could not be verified or
// read: no or a bad signature, a stale timestamp, or a malformed event.
// Nothing was changed.
type WebhookError struct{ Reason string }

// Error implements error.
func (e *WebhookError) Error() string { return "invalid webhook: " + e.Reason }

// MethodNotAllowedError lists the methods a path serves (the Allow header).
type MethodNotAllowedError struct{ Allow string }

// Error implements error.
func (e *MethodNotAllowedError) Error() string { return "method not allowed; allowed: " + e.Allow }
