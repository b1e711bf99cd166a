package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/pay"
	"github.com/toolgate/toolgate-go/store"
)

// This file is the engine's funding side: prepaid top-ups paid through a
// Checkout rail (pay.Checkout), and the rail's verified events applied to
// them. Money moves only in ApplyTopupEvent, through the store's one atomic
// step per event (store.Topups), so a payment is credited exactly once
// however often and in whatever order its events arrive.

// TopupPolicy says which top-ups a caller may ask for.
type TopupPolicy struct {
	// Limits lists the currencies a top-up may be paid in, with the least
	// and the most one top-up may be, in minor units.
	Limits map[string]TopupLimit
	// SuccessURL and CancelURL are where the payment page sends the
	// customer back when the request names none.
	SuccessURL, CancelURL string
}

// TopupLimit is the range of one top-up in one currency, in minor units.
type TopupLimit struct{ Min, Max int64 }

// Currencies returns the policy's currencies, sorted.
func (p TopupPolicy) Currencies() []string {
	out := make([]string, 0, len(p.Limits))
	for c := range p.Limits {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// ParseTopupPolicy reads the top-up limits from configuration: currencies
// is a comma-separated list ("USD,EUR"); min and max are decimal amounts,
// either one for every currency ("5") or one per currency ("USD:5.00,
// JPY:500"). Empty min and max mean 5 and 1000 (major units). It returns
// an error naming the bad value.
func ParseTopupPolicy(currencies, min, max string) (TopupPolicy, error) {
	p := TopupPolicy{Limits: map[string]TopupLimit{}}
	if min == "" {
		min = "5"
	}
	if max == "" {
		max = "1000"
	}
	for _, c := range strings.Split(currencies, ",") {
		c = strings.ToUpper(strings.TrimSpace(c))
		if c == "" {
			continue
		}
		lo, err := limitFor(min, c)
		if err != nil {
			return TopupPolicy{}, fmt.Errorf("top-up minimum for %s: %w", c, err)
		}
		hi, err := limitFor(max, c)
		if err != nil {
			return TopupPolicy{}, fmt.Errorf("top-up maximum for %s: %w", c, err)
		}
		if lo > hi {
			return TopupPolicy{}, fmt.Errorf("top-up limits for %s: minimum %s is above maximum %s",
				c, store.FormatAmount(lo, c), store.FormatAmount(hi, c))
		}
		p.Limits[c] = TopupLimit{Min: lo, Max: hi}
	}
	if len(p.Limits) == 0 {
		return TopupPolicy{}, errors.New("top-ups: no currency configured")
	}
	return p, nil
}

// limitFor reads currency's amount from spec: one decimal for every
// currency, or "CUR:amount" pairs.
func limitFor(spec, currency string) (int64, error) {
	if !strings.Contains(spec, ":") {
		return store.ParseAmount(strings.TrimSpace(spec), currency)
	}
	for _, pair := range strings.Split(spec, ",") {
		c, amount, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok {
			return 0, fmt.Errorf("%q is not CURRENCY:amount", pair)
		}
		if strings.EqualFold(strings.TrimSpace(c), currency) {
			return store.ParseAmount(strings.TrimSpace(amount), currency)
		}
	}
	return 0, fmt.Errorf("no limit given for %s in %q", currency, spec)
}

// TopupRequest is a caller asking to add money to its balance.
type TopupRequest struct {
	Caller   string
	Key      string // the caller's idempotency key: one top-up per key
	Amount   int64  // minor units of Currency
	Currency string
	// SuccessURL and CancelURL override the policy's return URLs.
	SuccessURL, CancelURL string
}

// Errors of the funding side.
var (
	// ErrTopupsDisabled means no Checkout rail is configured.
	ErrTopupsDisabled = errors.New("top-ups are not enabled on this gateway")
	// ErrTopupNotFound means the caller has no top-up with that id.
	ErrTopupNotFound = errors.New("top-up not found")
	// ErrTopupKeyReused means the Idempotency-Key was used for a top-up
	// with other values.
	ErrTopupKeyReused = errors.New("idempotency key reused for a different top-up")
)

// TopupError means a top-up request is out of the policy's range or
// malformed; nothing was created.
type TopupError struct{ Reason string }

// Error implements error.
func (e *TopupError) Error() string { return "invalid top-up: " + e.Reason }

// TopupsEnabled reports whether a Checkout rail is configured.
func (e *Engine) TopupsEnabled() bool { return e.checkout != nil }

// TopupPolicy returns the engine's top-up policy.
func (e *Engine) TopupPolicy() TopupPolicy { return e.topups }

// CreateTopup creates the caller's top-up under req.Key and its payment
// page, or returns the one the key already made (replayed true). A top-up
// whose page could not be made yet (the rail failed) stays pending, and the
// same request retried asks the rail again with the same key, which the rail
// answers with the same page: one key never makes two pages.
//
// Errors: ErrTopupsDisabled, *TopupError (nothing created),
// ErrTopupKeyReused (nothing changed), pay.ErrUnavailable (also while the
// rail is still making the page for a concurrent request with the same key)
// or a *pay.RejectedError from the rail (the top-up stays pending), and a
// *StoreError.
func (e *Engine) CreateTopup(ctx context.Context, req TopupRequest) (t store.Topup, replayed bool, err error) {
	if e.checkout == nil {
		return store.Topup{}, false, ErrTopupsDisabled
	}
	start := e.now()
	defer func() { e.logTopup(ctx, "topup.create", req.Caller, t, start, err) }()
	if err := ValidateIdempotencyKey(req.Key); err != nil {
		return store.Topup{}, false, err
	}
	lim, ok := e.topups.Limits[req.Currency]
	if !ok {
		return store.Topup{}, false, &TopupError{Reason: fmt.Sprintf("currency %q is not accepted for top-ups; accepted: %s",
			req.Currency, strings.Join(e.topups.Currencies(), ", "))}
	}
	if req.Amount < lim.Min || req.Amount > lim.Max {
		return store.Topup{}, false, &TopupError{Reason: fmt.Sprintf("amount %s %s is out of range: a top-up is %s to %s %s",
			store.FormatAmount(req.Amount, req.Currency), req.Currency, store.FormatAmount(lim.Min, req.Currency),
			store.FormatAmount(lim.Max, req.Currency), req.Currency)}
	}
	if req.SuccessURL == "" {
		req.SuccessURL = e.topups.SuccessURL
	}
	if req.CancelURL == "" {
		req.CancelURL = e.topups.CancelURL
	}
	for name, u := range map[string]string{"successUrl": req.SuccessURL, "cancelUrl": req.CancelURL} {
		if err := checkReturnURL(u); err != nil {
			return store.Topup{}, false, &TopupError{Reason: name + " " + err.Error()}
		}
	}
	id, err := e.newID("tu_")
	if err != nil {
		return store.Topup{}, false, err
	}
	now := e.now()
	t, created, err := e.store.CreateTopup(ctx, store.Topup{Caller: req.Caller, ID: id, Rail: e.checkout.Rail(),
		Key: req.Key, Fingerprint: topupFingerprint(req), Amount: req.Amount, Currency: req.Currency,
		Status: store.TopupPending, CreatedAt: now, UpdatedAt: now})
	if errors.Is(err, store.ErrFingerprintMismatch) {
		return store.Topup{}, false, ErrTopupKeyReused
	}
	if err != nil {
		return store.Topup{}, false, storeError("create top-up", err)
	}
	if t.Status != store.TopupPending {
		return t, !created, nil
	}
	s, err := e.checkout.CreateCheckout(ctx, pay.CheckoutRequest{Caller: t.Caller, TopupID: t.ID, Key: req.Key,
		Amount: t.Amount, Currency: t.Currency, SuccessURL: req.SuccessURL, CancelURL: req.CancelURL})
	if err != nil {
		return store.Topup{}, false, err
	}
	opened, err := e.store.OpenTopup(ctx, t.Caller, t.ID, s.ID, s.URL, e.now())
	if err != nil {
		return store.Topup{}, false, storeError("open top-up", err)
	}
	return opened, !created, nil
}

// checkReturnURL accepts an absolute http(s) URL of at most 2,048 bytes.
func checkReturnURL(u string) error {
	if u == "" {
		return errors.New("is required (no default is configured)")
	}
	if len(u) > 2048 {
		return errors.New("is longer than 2048 bytes")
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
		return errors.New("must be an absolute http(s) URL")
	}
	return nil
}

// topupFingerprint binds a top-up's key to what was asked.
func topupFingerprint(r TopupRequest) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{r.Currency, strconv.FormatInt(r.Amount, 10),
		r.SuccessURL, r.CancelURL}, "\x00")))
	return hex.EncodeToString(sum[:])
}

// Topup returns the caller's own top-up. It returns ErrTopupsDisabled,
// ErrTopupNotFound (also for another caller's top-up), or a *StoreError.
func (e *Engine) Topup(ctx context.Context, caller, id string) (store.Topup, error) {
	if e.checkout == nil {
		return store.Topup{}, ErrTopupsDisabled
	}
	t, err := e.store.Topup(ctx, caller, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Topup{}, ErrTopupNotFound
	}
	if err != nil {
		return store.Topup{}, storeError("read top-up", err)
	}
	return t, nil
}

// TopupEventOutcome is what ApplyTopupEvent did with an event.
type TopupEventOutcome struct {
	store.TopupEventResult
	// Ignored says why an event changed nothing and never will (no such
	// top-up, another session than the one recorded, an amount the store
	// cannot hold): the rail need not deliver it again. "" when applied or
	// a duplicate.
	Ignored string
	// Parked is true for a refund or a dispute of a payment no top-up has
	// recorded yet: it is kept and applied when the session's event
	// records the payment (store.Topups.ParkTopupEvent).
	Parked bool
}

// ApplyTopupEvent applies a rail's verified event to the caller's top-up
// (see store.Topups.ApplyTopupEvent). An event that names no caller (a
// refund or a dispute, which name the payment) is routed by its
// PaymentIntent. It returns a *StoreError when the store fails, so that the
// rail delivers the event again; every other outcome, ignored events
// included, is final.
func (e *Engine) ApplyTopupEvent(ctx context.Context, ev store.TopupEvent) (out TopupEventOutcome, err error) {
	start := e.now()
	defer func() {
		e.logger.LogAttrs(ctx, levelFor(err), "topup.event", eventAttrs(ev, out, start, e.now(), err)...)
	}()
	if ev.Now.IsZero() {
		ev.Now = e.now()
	}
	if ev.Caller == "" || ev.TopupID == "" {
		ref := ev.PaymentIntent
		if ref == "" {
			ref = ev.SessionID
		}
		if ref == "" {
			return TopupEventOutcome{Ignored: "the event names neither a top-up nor a payment"}, nil
		}
		t, err := e.store.TopupByPayment(ctx, ev.Rail, ref)
		if errors.Is(err, store.ErrNotFound) && ev.PaymentIntent != "" &&
			(ev.Kind == store.TopupEventRefunded || ev.Kind == store.TopupEventDisputed) {
			// Perhaps it came before the session's own events were
			// applied: keep it for the session event that records the
			// payment, rather than lose it.
			if err := e.store.ParkTopupEvent(ctx, ev); err != nil {
				if store.IsAnswer(err) {
					return TopupEventOutcome{Ignored: err.Error()}, nil
				}
				return TopupEventOutcome{}, storeError("park top-up event", err)
			}
			return TopupEventOutcome{Parked: true}, nil
		}
		if errors.Is(err, store.ErrNotFound) {
			return TopupEventOutcome{Ignored: "no top-up is known for payment " + ref}, nil
		}
		if err != nil {
			return TopupEventOutcome{}, storeError("find top-up", err)
		}
		ev.Caller, ev.TopupID = t.Caller, t.ID
	}
	res, err := e.store.ApplyTopupEvent(ctx, ev)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return TopupEventOutcome{Ignored: "no such top-up"}, nil
	case errors.Is(err, store.ErrConflict):
		return TopupEventOutcome{Ignored: "the event names another payment page than the top-up's"}, nil
	case store.IsAnswer(err):
		return TopupEventOutcome{Ignored: err.Error()}, nil
	case err != nil:
		return TopupEventOutcome{}, storeError("apply top-up event", err)
	}
	return TopupEventOutcome{TopupEventResult: res}, nil
}

// TopUpHint tells a caller refused for money how to add some: the route and
// the least top-up that lets the call through.
type TopUpHint struct {
	Method   string
	Path     string
	Currency string
	Minimum  int64 // minor units: the policy's minimum, or the shortfall if larger
	Maximum  int64
}

// PaymentRequiredError is a call refused for money, with what the caller
// can do about it: an insufficient balance (Funds, the store's
// *InsufficientFundsError, which it unwraps to) and the top-up that would
// cover it, and, for a tool also sold per call, its x402 price (X402) and
// why a payment presented was refused (Reason).
type PaymentRequiredError struct {
	// Funds is nil for a call without an account (paid per call or not at
	// all).
	Funds *store.InsufficientFundsError
	// Shortfall is what the caller must add (debt included) for the call
	// to go through, in minor units of Funds.Currency.
	Shortfall int64
	// TopUp is set when top-ups are enabled in Funds.Currency.
	TopUp *TopUpHint
	// X402 is the tool's per-call price, when it is sold per call.
	X402 *catalog.X402
	// Reason is the rail's code for a presented payment it refused (x402's
	// invalidReason or errorReason), Detail its words; "" when no payment
	// was presented.
	Reason, Detail string
}

// Error implements error.
func (e *PaymentRequiredError) Error() string {
	switch {
	case e.Funds != nil:
		return e.Funds.Error()
	case e.Reason != "":
		return "payment required: the payment was refused: " + e.Reason
	}
	return "payment required"
}

// Unwrap returns the store's error, if any.
func (e *PaymentRequiredError) Unwrap() error {
	if e.Funds == nil {
		return nil
	}
	return e.Funds
}

// TopupsPath is the route that creates top-ups, named in TopUpHint.
const TopupsPath = "/v1/topups"

// paymentRequired adds the shortfall and the top-up hint to an
// insufficient balance; other errors pass unchanged.
func (e *Engine) paymentRequired(err error, tool string) error {
	var fe *store.InsufficientFundsError
	if !errors.As(err, &fe) || fe.Cap != nil {
		return err // a spending cap is not lifted by paying
	}
	var already *PaymentRequiredError
	if errors.As(err, &already) {
		return err
	}
	pr := &PaymentRequiredError{Funds: fe, Shortfall: max(1, fe.Required+fe.Owed-fe.Balance)}
	if t, ok := e.catalog.Tool(tool); ok && e.perCall != nil {
		pr.X402 = t.X402
	}
	if lim, ok := e.topups.Limits[fe.Currency]; ok && e.checkout != nil {
		// A shortfall above one top-up's maximum takes several top-ups.
		pr.TopUp = &TopUpHint{Method: "POST", Path: TopupsPath, Currency: fe.Currency,
			Minimum: min(max(lim.Min, pr.Shortfall), lim.Max), Maximum: lim.Max}
	}
	return pr
}

// logTopup writes the one JSON line of a top-up request.
func (e *Engine) logTopup(ctx context.Context, msg, caller string, t store.Topup, start time.Time, err error) {
	attrs := []slog.Attr{
		slog.String("caller", caller),
		slog.String("topup", t.ID),
		slog.String("status", string(t.Status)),
		slog.String("amount", store.FormatAmount(t.Amount, t.Currency)),
		slog.String("currency", t.Currency),
		slog.Float64("durationMs", float64(e.now().Sub(start).Microseconds())/1000),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	e.logger.LogAttrs(ctx, levelFor(err), msg, attrs...)
}

// eventAttrs are the log attributes of one applied rail event.
func eventAttrs(ev store.TopupEvent, out TopupEventOutcome, start, end time.Time, err error) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("rail", ev.Rail),
		slog.String("event", ev.EventID),
		slog.String("type", ev.Type),
		slog.String("kind", ev.Kind.String()),
		slog.String("caller", ev.Caller),
		slog.String("topup", ev.TopupID),
		slog.Bool("duplicate", out.Duplicate),
		slog.Int64("credited", out.Credited),
		slog.Int64("taken", out.Taken),
		slog.Int64("owed", out.Owed),
		slog.Float64("durationMs", float64(end.Sub(start).Microseconds())/1000),
	}
	if out.Ignored != "" {
		attrs = append(attrs, slog.String("ignored", out.Ignored))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	return attrs
}

// levelFor logs failures of the gateway's own side as errors.
func levelFor(err error) slog.Level {
	var se *StoreError
	if errors.As(err, &se) || errors.Is(err, pay.ErrUnavailable) {
		return slog.LevelError
	}
	return slog.LevelInfo
}
