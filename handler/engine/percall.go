package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/toolgate/toolgate-go/handler/pay"
	"github.com/toolgate/toolgate-go/handler/safejson"
	"github.com/toolgate/toolgate-go/store"
)

// This file is the call paid per request (x402, through pay.PerCall),
// following ../shared/PAYMENTS.md's three moments:
//
//   - authorize: the payment is bound to the key in the same atomic step as
//     the claim (store.Payments.ClaimPayment: one payment pays for one key,
//     for ever), and only the request that wins the key asks the rail to
//     verify it, so N duplicates cost one verify;
//   - capture: after a 2xx answer, the settle is recorded as under way
//     (MarkSettling) before it is sent, and its outcome is stored with the
//     answer (CompletePaid): settled, or settlement_pending when the rail
//     gave no usable answer: the answer is delivered and the cron's
//     reconciler settles the same payment later (ReconcilePayments). A
//     payment whose settle outcome is unknown is never answered with a
//     fresh 402, which would make the payer sign, and pay, twice;
//   - void: an upstream failure or rejection (a 4xx is answered 424 but,
//     unlike a prepaid call's, not stored as final) settles nothing: the
//     key fails with its payment not_charged, and the same signed payment
//     may be retried under the same key until it expires.
//
// A duplicate replays the stored answer with the key's settlement receipt.
// A duplicate presenting another payment than the one bound to the key gets
// the answer only if the rail verifies that payment (which is not settled):
// a payer's key does not open its answer to anyone who can write the
// payer's address.

// PaymentInfo is a per-call payment's state as the surfaces report it (the
// PAYMENT-RESPONSE header, MCP's _meta).
type PaymentInfo struct {
	Rail        string
	Payer       string
	Network     string
	State       store.PaymentState
	Transaction string
}

// ErrPerCallDisabled means a per-call payment came for a tool or gateway
// that does not sell per call.
var ErrPerCallDisabled = errors.New("this tool is not sold per call")

// callPerCall is call for a request that carries a per-call payment.
func (e *Engine) callPerCall(ctx context.Context, req CallRequest, l *callLog) (CallResult, error) {
	p := *req.Payment
	tool, ok := e.catalog.Tool(req.Tool)
	if !ok {
		return CallResult{}, fmt.Errorf("%w: %q", ErrUnknownTool, req.Tool)
	}
	if e.perCall == nil || tool.X402 == nil || p.Rail != e.perCall.Rail() {
		return CallResult{}, fmt.Errorf("%w: %q", ErrPerCallDisabled, req.Tool)
	}
	l.caller = p.Caller
	key := req.Key
	if key == "" {
		key = p.KeyHint
	}
	if err := ValidateIdempotencyKey(key); err != nil {
		return CallResult{}, err
	}
	canonical, err := Canonicalize(req.Input)
	if err != nil {
		return CallResult{}, err
	}
	a := &attempt{e: e, tool: tool, caller: store.Caller{ID: p.Caller}, key: ScopedKey(p.Caller, tool.Name, key),
		input: canonical, header: req.Header, payment: &p}
	l.key = logKey(a.key)
	owner, err := e.newID("o_")
	if err != nil {
		return CallResult{}, err
	}
	cp := store.ClaimParams{Key: a.key, Owner: owner, Fingerprint: Fingerprint(tool.Name, canonical),
		Now: e.now(), Lease: tool.Lease, TTL: tool.TTL}
	cr, err := a.claimPaid(ctx, cp)
	if err != nil {
		return CallResult{}, storeError("claim key", err)
	}
	if cr.Outcome != store.OutcomeClaimed && a.bound.Ref != p.Ref {
		// Another payment holds the key: this one must be good before it
		// sees the answer. It is not settled; the bound one pays.
		if err := a.verify(ctx); err != nil {
			return CallResult{}, err
		}
	}
	switch cr.Outcome {
	case store.OutcomeCompleted:
		return a.replayPaid(ctx, cr.Record, OutcomeReplayed)
	case store.OutcomeClaimed:
		res, err := a.executeShared(ctx, fenceOf(cr.Record), cp.Fingerprint, nil)
		if errors.Is(err, ErrLostLease) {
			return a.waitThenReplay(ctx, cp, cr.Record)
		}
		return res, err
	}
	return a.waitThenReplay(ctx, cp, cr.Record)
}

// claimPaid claims the key with the attempt's payment bound to it, and
// keeps the key's payment as it stands (a.bound).
func (a *attempt) claimPaid(ctx context.Context, p store.ClaimParams) (store.ClaimResult, error) {
	pp := a.payment
	res, err := a.e.store.ClaimPayment(ctx, store.ClaimPaymentParams{ClaimParams: p, Payment: store.Payment{
		Caller: pp.Caller, Ref: pp.Ref, Key: p.Key, Rail: pp.Rail, Network: pp.Network, Amount: pp.Amount,
		Currency: pp.Currency, State: store.PaymentVerified, Payload: pp.Payload, Requirements: pp.Requirements,
		ValidBefore: pp.ValidBefore, CreatedAt: p.Now, UpdatedAt: p.Now}})
	if err != nil {
		return store.ClaimResult{}, err
	}
	a.bound = res.Payment
	return res.ClaimResult, nil
}

// verify asks the rail whether the attempt's payment is good: a refusal is
// a *PaymentRequiredError with the rail's reason, no answer at all
// pay.ErrUnavailable.
func (a *attempt) verify(ctx context.Context) error {
	err := a.e.perCall.Verify(ctx, *a.payment)
	var rej *pay.RejectedError
	if errors.As(err, &rej) {
		return &PaymentRequiredError{X402: a.tool.X402, Reason: rej.Code, Detail: rej.Reason}
	}
	return err
}

// replayPaid replays a completed key with its payment's receipt.
func (a *attempt) replayPaid(ctx context.Context, rec store.Record, o Outcome) (CallResult, error) {
	res, err := replay(rec, o)
	if err != nil {
		return res, err
	}
	if rec.PaymentRef == "" {
		return res, nil
	}
	bound := a.bound
	if bound.Ref != rec.PaymentRef || bound.State == store.PaymentVerified {
		// Read the payment as the completion left it.
		if bound, err = a.e.store.PaymentByRef(ctx, a.payment.Caller, rec.PaymentRef); err != nil {
			return CallResult{}, storeError("read payment", err)
		}
	}
	res.Payment = a.paymentInfo(bound.State, bound.Transaction)
	return res, nil
}

func (a *attempt) paymentInfo(state store.PaymentState, tx string) *PaymentInfo {
	return &PaymentInfo{Rail: a.payment.Rail, Payer: a.payment.Payer, Network: a.payment.Network, State: state, Transaction: tx}
}

// executePaid is execute for a key won with a payment: verify (unless an
// earlier attempt's settle of this payment has an unknown outcome), call
// the upstream, then settle and store the answer with the settle's outcome.
func (a *attempt) executePaid(ctx context.Context, f store.Fence) (CallResult, error) {
	ctx = context.WithoutCancel(ctx)
	e := a.e
	settling := false
	defer func() {
		if v := recover(); v != nil {
			if !settling {
				_ = e.store.FailPaid(ctx, f, "panic during execution", a.payment.Ref,
					store.PaymentOutcome{State: store.PaymentNotCharged}, e.now())
			}
			panic(v)
		}
	}()
	// An earlier attempt sent this payment to settle and never learnt the
	// outcome: the money may have moved. It is not verified again (a used
	// nonce would not verify); the action runs and the settle below counts
	// the earlier one.
	inherited := a.bound.State == store.PaymentPending && a.bound.Ref == a.payment.Ref
	if !inherited {
		if err := a.verify(ctx); err != nil {
			b := a.finalBudget()
			if ferr := a.failPaid(ctx, f, b, "payment not verified", store.PaymentOutcome{State: store.PaymentNotCharged}); ferr != nil {
				return CallResult{}, errors.Join(err, ferr)
			}
			return CallResult{}, err
		}
	}
	up := a.callUpstream(ctx, f)
	if up.lost {
		return CallResult{}, ErrLostLease
	}
	b := a.finalBudget()
	// A failure leaves the payment not_charged (nothing moved; the same
	// payment may be retried under this key), except one inherited
	// settlement_pending, which the store keeps pending and due: the
	// reconciler settles it and credits the payer back if it had moved.
	notCharged := store.PaymentOutcome{State: store.PaymentNotCharged}
	if ue := a.upstreamFailure(up); ue != nil {
		ue.Currency = a.payment.Currency
		if err := a.failPaid(ctx, f, b, ue.Reason, notCharged); err != nil {
			return CallResult{}, errors.Join(ue, err)
		}
		return CallResult{}, ue
	}
	res, resp, err := a.paidAnswer(up)
	var ue *UpstreamError
	if errors.As(err, &ue) {
		if ferr := a.failPaid(ctx, f, b, ue.Reason, notCharged); ferr != nil {
			return CallResult{}, errors.Join(ue, ferr)
		}
		return CallResult{}, ue
	}
	if err != nil {
		return CallResult{}, err
	}
	if up.resp.StatusCode >= 400 {
		// The upstream refused the input: answered 424, nothing settled.
		// Unlike a prepaid call's, this answer is not stored as final: no
		// payment paid for it, so the key fails and a retry (with the same
		// payment, until it expires) runs again.
		if err := a.failPaid(ctx, f, b, fmt.Sprintf("the tool answered %d", up.resp.StatusCode), notCharged); err != nil {
			return CallResult{}, err
		}
		res.Payment = a.paymentInfo(store.PaymentNotCharged, "")
		return res, nil
	}
	if err := a.retryFinal(ctx, b, "mark settling", func(bool) error {
		return e.store.MarkSettling(ctx, f, a.payment.Ref, e.now())
	}, nil); err != nil {
		return CallResult{}, err
	}
	settling = true
	s, err := e.perCall.Settle(ctx, *a.payment)
	var rej *pay.RejectedError
	var out store.PaymentOutcome
	switch {
	case err == nil:
		out = store.PaymentOutcome{State: store.PaymentSettled, Transaction: s.Transaction}
	case errors.As(err, &rej) && rej.Code == pay.ReasonAlreadySettled && inherited:
		// The earlier attempt's settle went through.
		out = store.PaymentOutcome{State: store.PaymentSettled}
	case errors.As(err, &rej):
		// Definitively not settled: nothing moved, and the answer is not
		// given away.
		if ferr := a.failPaid(ctx, f, b, "settle refused: "+rej.Code, store.PaymentOutcome{State: store.PaymentFailed, Reason: rej.Code}); ferr != nil {
			return CallResult{}, errors.Join(err, ferr)
		}
		return CallResult{}, &PaymentRequiredError{X402: a.tool.X402, Reason: rej.Code, Detail: rej.Reason}
	default:
		// No usable answer: deliver, and settle the same payment later.
		out = store.PaymentOutcome{State: store.PaymentPending, Reason: err.Error()}
	}
	if err := a.completePaid(ctx, f, b, resp, out); err != nil {
		return CallResult{}, err
	}
	res.Payment = a.paymentInfo(out.State, out.Transaction)
	return res, nil
}

// paidAnswer builds the stored answer of a paid call: the envelope, its
// receipt in the payment's terms, and 424 for an upstream 4xx.
func (a *attempt) paidAnswer(up upstreamResult) (CallResult, store.Response, error) {
	e := a.e
	p := a.payment
	amount := store.FormatAmount(p.Amount, p.Currency)
	rcpt := Receipt{Tool: a.tool.Name, Price: amount, Amount: amount, Currency: p.Currency,
		At: store.FromUnixMilli(store.UnixMilli(e.now())), Rail: p.Rail, Payer: p.Payer}
	var err error
	if rcpt.CallID, err = e.newID("call_"); err != nil {
		return CallResult{}, store.Response{}, err
	}
	env := envelope{Tool: a.tool.Name, Upstream: upstreamInfo{Status: up.resp.StatusCode, ContentType: up.resp.ContentType}}
	env.Output, env.Upstream.Encoding = encodeOutput(up.resp)
	res := CallResult{StatusCode: http.StatusOK, ContentType: "application/json", Outcome: OutcomeExecuted}
	if up.resp.StatusCode >= 400 {
		rcpt.Amount = store.FormatAmount(0, p.Currency)
		env.Type, env.Title, env.Status = ProblemTypeBase+"upstream-rejected", "Upstream rejected the input", http.StatusFailedDependency
		env.Detail = fmt.Sprintf("the tool answered %d; the payment was not settled and may be retried with this Idempotency-Key until it expires", up.resp.StatusCode)
		res.StatusCode, res.ContentType = http.StatusFailedDependency, "application/problem+json"
	}
	env.Receipt = rcpt
	res.Receipt = rcpt
	if res.Body, err = safejson.MarshalNoEscape(env); err != nil {
		return CallResult{}, store.Response{}, fmt.Errorf("encode answer: %w", err)
	}
	if len(res.Body) > e.maxStored {
		return CallResult{}, store.Response{}, &UpstreamError{StatusCode: up.resp.StatusCode,
			Reason: fmt.Sprintf("the upstream answer is too large to store (limit %d bytes)", e.maxStored)}
	}
	return res, store.Response{StatusCode: res.StatusCode, ContentType: res.ContentType, Body: res.Body}, nil
}

// completePaid stores the answer with the settle's outcome (see
// retryFinal). A Complete whose reply was lost is recognised by Peek, as
// for prepaid calls.
func (a *attempt) completePaid(ctx context.Context, f store.Fence, b *finalBudget, resp store.Response, out store.PaymentOutcome) error {
	e := a.e
	return a.retryFinal(ctx, b, "complete key", func(bool) error {
		return e.store.CompletePaid(ctx, store.CompleteParams{Fence: f, Now: e.now(), TTL: a.tool.TTL, Response: resp}, a.payment.Ref, out)
	}, func() (bool, error) {
		rec, err := e.store.Peek(ctx, f.Key)
		if err != nil {
			return false, err
		}
		return rec.Status == store.StatusCompleted && rec.Owner == f.Owner && rec.Generation == f.Generation &&
			rec.Response != nil && string(rec.Response.Body) == string(resp.Body), nil
	})
}

// failPaid fails the key with the payment's new state (see retryFinal).
func (a *attempt) failPaid(ctx context.Context, f store.Fence, b *finalBudget, reason string, out store.PaymentOutcome) error {
	e := a.e
	return a.retryFinal(ctx, b, "fail key", func(bool) error {
		return e.store.FailPaid(ctx, f, reason, a.payment.Ref, out, e.now())
	}, func() (bool, error) {
		rec, err := e.store.Peek(ctx, f.Key)
		if errors.Is(err, store.ErrNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return rec.Generation > f.Generation ||
			rec.Status == store.StatusFailed && rec.Owner == f.Owner && rec.Generation == f.Generation, nil
	})
}

// ReconcileResult counts what one reconciliation did.
type ReconcileResult struct {
	Due, Settled, Failed, Pending, CreditedBack int
}

// ReconcilePayments settles again, at most limit, the per-call payments
// whose settle outcome is unknown (settlement_pending, due): the cron
// calls it. A settle that goes through (or is refused because an earlier
// one did) is recorded settled, and credited back to the payer's prepaid
// balance when its key holds no delivered answer (store.ResolvePayment); a
// definitive refusal is settlement_failed (a recorded loss if the answer
// was delivered); no usable answer again schedules another attempt with
// capped backoff.
func (e *Engine) ReconcilePayments(ctx context.Context, limit int) (ReconcileResult, error) {
	var r ReconcileResult
	if e.perCall == nil {
		return r, nil
	}
	now := e.now()
	due, err := e.store.DuePayments(ctx, now, limit)
	if err != nil {
		return r, storeError("list due payments", err)
	}
	r.Due = len(due)
	var errs []error
	for _, p := range due {
		s, err := e.perCall.Settle(ctx, pay.Payment{Rail: p.Rail, Payer: p.Caller, Caller: p.Caller, Ref: p.Ref,
			Network: p.Network, Amount: p.Amount, Currency: p.Currency, ValidBefore: p.ValidBefore,
			Payload: p.Payload, Requirements: p.Requirements})
		var rej *pay.RejectedError
		out := store.PaymentOutcome{State: store.PaymentSettled}
		switch {
		case err == nil:
			out.Transaction = s.Transaction
		case errors.As(err, &rej) && rej.Code == pay.ReasonAlreadySettled:
		case errors.As(err, &rej):
			out = store.PaymentOutcome{State: store.PaymentFailed, Reason: rej.Code}
		default:
			out = store.PaymentOutcome{State: store.PaymentPending, Reason: err.Error()}
		}
		next := now.Add(min(time.Duration(1<<min(p.Attempts, 12))*time.Second, time.Hour))
		got, err := e.store.ResolvePayment(ctx, p.Caller, p.Ref, out, next, e.now())
		if err != nil {
			errs = append(errs, storeError("resolve payment", err))
			continue
		}
		switch got.State {
		case store.PaymentSettled:
			r.Settled++
		case store.PaymentCreditedBack:
			r.CreditedBack++
		case store.PaymentFailed:
			r.Failed++
		default:
			r.Pending++
		}
		e.logger.LogAttrs(ctx, levelFor(err), "payment.reconcile", paymentAttrs(got)...)
	}
	return r, errors.Join(errs...)
}

// paymentAttrs are the log attributes of a payment.
func paymentAttrs(p store.Payment) []slog.Attr {
	return []slog.Attr{
		slog.String("caller", p.Caller),
		slog.String("key", logKey(p.Key)),
		slog.String("rail", p.Rail),
		slog.String("state", string(p.State)),
		slog.String("amount", store.FormatAmount(p.Amount, p.Currency)),
		slog.String("currency", p.Currency),
		slog.Int("attempts", p.Attempts),
		slog.String("transaction", p.Transaction),
		slog.String("reason", p.Reason),
	}
}

// PendingSettlements lists at most limit per-call payments whose settle
// outcome is not known yet (settlement_pending), due within a day: the
// dashboard's attention list.
func (e *Engine) PendingSettlements(ctx context.Context, limit int) ([]store.Payment, error) {
	ps, err := e.store.DuePayments(ctx, e.now().Add(24*time.Hour), limit)
	if err != nil {
		return nil, storeError("list pending settlements", err)
	}
	return ps, nil
}
