package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
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
	input, canonical, err := decodeInput(req.Input)
	if err != nil {
		return CallResult{}, err
	}
	// Before the payment is bound to the key (ClaimPayment) or verified:
	// an invalid input costs the payer nothing and leaves the payment free.
	if err := checkInput(tool, input); err != nil {
		return CallResult{}, err
	}
	a := &attempt{e: e, tool: tool, caller: store.Caller{ID: p.Caller}, key: ScopedKey(p.Caller, tool.Name, key),
		input: canonical, header: req.Header, payment: &p}
	l.key = logKey(a.key)
	owner, err := e.newID("o_")
	if err != nil {
		return CallResult{}, err
	}
	if p.Expired != "" {
		// An expired payment only opens the key it already paid for; it
		// claims and binds nothing new.
		rec, err := e.store.Peek(ctx, a.key)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return CallResult{}, storeError("peek key", err)
		}
		if err != nil || rec.PaymentRef != p.Ref {
			return CallResult{}, &PaymentRequiredError{X402: tool.X402, Reason: p.Expired,
				Detail: "the payment's authorization has expired; sign a new one"}
		}
	}
	cp := store.ClaimParams{Key: a.key, Owner: owner, Fingerprint: Fingerprint(tool.Name, canonical),
		Now: e.now(), Lease: tool.Lease, TTL: tool.TTL}
	cr, err := a.claimPaid(ctx, cp)
	if err != nil {
		return CallResult{}, storeError("claim key", err)
	}
	if cr.Outcome != store.OutcomeClaimed && !a.presentsBound() {
		// Another payment holds the key, or another copy of it (the same
		// authorization with another signature: after a settle, a
		// payment's fields are public on chain): this one must be good
		// before it sees the answer. It is not settled; the bound one pays.
		if err := a.verify(ctx); err != nil {
			return CallResult{}, err
		}
	}
	switch cr.Outcome {
	case store.OutcomeCompleted:
		return a.replayPaid(ctx, cr.Record, OutcomeReplayed)
	case store.OutcomeClaimed:
		res, err := a.executeShared(ctx, fenceOf(cr.Record), cp.Fingerprint, nil, nil)
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

// presentsBound reports whether the request presented, byte for byte, the
// signed payment bound to the key.
func (a *attempt) presentsBound() bool {
	return a.bound.Ref == a.payment.Ref && bytes.Equal(a.bound.Payload, a.payment.Payload)
}

// boundPayment is the key's bound payment as the rail takes it: what a
// takeover of a key whose settle's outcome is unknown settles again.
func (a *attempt) boundPayment() pay.Payment {
	p := railPayment(a.bound)
	p.Payer = a.payment.Payer
	return p
}

// railPayment is a stored payment as its rail takes it, to settle again.
func railPayment(p store.Payment) pay.Payment {
	return pay.Payment{Rail: p.Rail, Caller: p.Caller, Ref: p.Ref, Network: p.Network, Amount: p.Amount,
		Currency: p.Currency, ValidBefore: p.ValidBefore, Payload: p.Payload, Requirements: p.Requirements}
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

// executePaid is execute for a key won with a payment: verify, call the
// upstream, then settle and store the answer with the settle's outcome.
//
// A key taken over while its payment's settle had an unknown outcome
// (settlement_pending: a crash, a lost reply, a settle that outran the
// lease) keeps that payment, which may have moved money: the action runs
// again and the stored payment (not the one presented, which is only
// verified, unless it is the same) is settled again; "already settled"
// then counts the earlier settle, and a refusal that an earlier success
// could explain (pay.RejectedError.MaybeMoved) is not taken as proof that
// nothing moved.
func (a *attempt) executePaid(ctx context.Context, f store.Fence) (CallResult, error) {
	ctx = context.WithoutCancel(ctx)
	e := a.e
	inherited := a.bound.State == store.PaymentPending
	settle := *a.payment
	if inherited {
		settle = a.boundPayment()
	}
	settling := false
	defer func() {
		if v := recover(); v != nil {
			if !settling {
				_ = e.store.FailPaid(ctx, f, "panic during execution", settle.Ref,
					store.PaymentOutcome{State: store.PaymentNotCharged}, e.now())
			}
			panic(v)
		}
	}()
	notCharged := store.PaymentOutcome{State: store.PaymentNotCharged}
	if a.payment.Expired != "" && !inherited {
		// An expired authorization pays for nothing new.
		if err := a.failPaid(ctx, f, a.finalBudget(), settle.Ref, "payment expired", notCharged); err != nil {
			return CallResult{}, err
		}
		return CallResult{}, &PaymentRequiredError{X402: a.tool.X402, Reason: a.payment.Expired,
			Detail: "the payment's authorization has expired; sign a new one"}
	}
	if !inherited || !a.presentsBound() {
		if err := a.verify(ctx); err != nil {
			if ferr := a.failPaid(ctx, f, a.finalBudget(), settle.Ref, "payment not verified", notCharged); ferr != nil {
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
	// payment may be retried under this key), except an inherited
	// settlement_pending one, which the store keeps pending and due: the
	// reconciler settles it and credits the payer back if it had moved.
	if ue := a.upstreamFailure(up); ue != nil {
		ue.Currency = settle.Currency
		if err := a.failPaid(ctx, f, b, settle.Ref, ue.Reason, notCharged); err != nil {
			return CallResult{}, errors.Join(ue, err)
		}
		return CallResult{}, ue
	}
	res, resp, err := a.paidAnswer(up)
	var ue *UpstreamError
	if errors.As(err, &ue) {
		if ferr := a.failPaid(ctx, f, b, settle.Ref, ue.Reason, notCharged); ferr != nil {
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
		if err := a.failPaid(ctx, f, b, settle.Ref, fmt.Sprintf("the tool answered %d", up.resp.StatusCode), notCharged); err != nil {
			return CallResult{}, err
		}
		res.Payment = a.paymentInfo(store.PaymentNotCharged, "")
		return res, nil
	}
	if !inherited {
		if err := a.retryFinal(ctx, b, "mark settling", func(bool) error {
			return e.store.MarkSettling(ctx, f, settle.Ref, e.now())
		}, nil); err != nil {
			return CallResult{}, err
		}
	}
	settling = true
	s, err := a.settleUnderLease(ctx, f, settle)
	b = a.finalBudget() // the settle may have taken long: the final writes get their own budget
	var rej *pay.RejectedError
	var out store.PaymentOutcome
	switch {
	case err == nil:
		out = store.PaymentOutcome{State: store.PaymentSettled, Transaction: s.Transaction}
	case errors.As(err, &rej) && rej.Code == pay.ReasonAlreadySettled && inherited:
		// The earlier attempt's settle went through.
		out = store.PaymentOutcome{State: store.PaymentSettled}
	case errors.As(err, &rej) && !(inherited && rej.MaybeMoved):
		// Definitively not settled: nothing moved, and the answer is not
		// given away.
		if ferr := a.failPaid(ctx, f, b, settle.Ref, "settle refused: "+rej.Code, store.PaymentOutcome{State: store.PaymentFailed, Reason: rej.Code}); ferr != nil {
			return CallResult{}, errors.Join(err, ferr)
		}
		return CallResult{}, &PaymentRequiredError{X402: a.tool.X402, Reason: rej.Code, Detail: rej.Reason}
	default:
		// No usable answer (or one that proves nothing): deliver, and
		// settle the same payment again soon, then from the cron.
		out = store.PaymentOutcome{State: store.PaymentPending, Reason: err.Error()}
	}
	if err := a.completePaid(ctx, f, b, settle.Ref, resp, out); err != nil {
		return CallResult{}, err
	}
	if out.State == store.PaymentPending {
		e.reconcileSoon(ctx, settle.Caller, settle.Ref)
	}
	res.Payment = a.paymentInfo(out.State, out.Transaction)
	return res, nil
}

// settleUnderLease settles p while heartbeats keep the key's lease: a
// settle may take as long as the rail's timeout, longer than a lease, and
// a waiter must not take the key over (and run the action again) while it
// runs. The settle is never cancelled half-way: its outcome would be
// unknown.
func (a *attempt) settleUnderLease(ctx context.Context, f store.Fence, p pay.Payment) (pay.Settlement, error) {
	hbCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.heartbeat(hbCtx, f, func() {})
	}()
	defer func() {
		stop()
		wg.Wait()
	}()
	return a.e.perCall.Settle(ctx, p)
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
func (a *attempt) completePaid(ctx context.Context, f store.Fence, b *finalBudget, ref string, resp store.Response, out store.PaymentOutcome) error {
	e := a.e
	return a.completeWith(ctx, f, b, resp, func() error {
		return e.store.CompletePaid(ctx, store.CompleteParams{Fence: f, Now: e.now(), TTL: a.tool.TTL, Response: resp}, ref, out)
	})
}

// failPaid fails the key with the payment's new state (see retryFinal).
func (a *attempt) failPaid(ctx context.Context, f store.Fence, b *finalBudget, ref, reason string, out store.PaymentOutcome) error {
	e := a.e
	return a.failWith(ctx, f, b, func() error { return e.store.FailPaid(ctx, f, reason, ref, out, e.now()) })
}

// ReconcileResult counts what one reconciliation did.
type ReconcileResult struct {
	Due, Settled, Failed, Pending, CreditedBack int
}

// UndeliveredRetryWindow is how long the reconciler leaves alone a pending
// payment whose call was abandoned before its answer was stored, so that
// the agent's retry (which takes the key over with the same payment, runs
// the action and settles it once) comes first.
const UndeliveredRetryWindow = 10 * time.Minute

// UnresolvedGrace is how long after a payment's authorization expired the
// reconciler keeps asking about a settle whose outcome is unknown, before
// it gives up (see ReconcilePayments).
const UnresolvedGrace = 10 * time.Minute

// ReconcilePayments settles again, at most limit, the per-call payments
// whose settle outcome is unknown (settlement_pending, due): the cron calls
// it, and a call whose settle got no usable answer asks once more a few
// seconds later (reconcileSoon), so that most are resolved while the
// authorization is still valid.
//
//   - A settle that goes through, or is refused because an earlier one did
//     (already settled), is recorded settled; and credited back to the
//     payer's prepaid balance when the key holds no delivered answer
//     (store.ResolvePayment).
//   - A refusal that proves nothing moved (a bad signature, recipient or
//     amount: it would have failed the first settle too) is
//     settlement_failed: a recorded loss when the answer was delivered.
//   - No usable answer, or a refusal an earlier success could explain
//     (pay.RejectedError.MaybeMoved: expired, balance spent), keeps it
//     pending with capped backoff, until UnresolvedGrace after the
//     authorization expired. Then the outcome is unknowable here, and the
//     payer is not the one who loses: an undelivered call is credited back
//     (as if it had moved), a delivered one is recorded as a possible loss
//     (settlement_failed, delivered, reason "unresolved").
func (e *Engine) ReconcilePayments(ctx context.Context, limit int) (ReconcileResult, error) {
	var r ReconcileResult
	if e.perCall == nil {
		return r, nil
	}
	due, err := e.store.DuePayments(ctx, e.now(), limit)
	if err != nil {
		return r, storeError("list due payments", err)
	}
	r.Due = len(due)
	var errs []error
	for _, p := range due {
		got, err := e.reconcileOne(ctx, p)
		if err != nil {
			errs = append(errs, err)
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
	}
	return r, errors.Join(errs...)
}

// reconcileOne settles p again and records what came of it (see
// ReconcilePayments).
func (e *Engine) reconcileOne(ctx context.Context, p store.Payment) (store.Payment, error) {
	if wait := p.UpdatedAt.Add(UndeliveredRetryWindow); !p.Delivered && e.now().Before(wait) {
		// Its call was abandoned before the answer was stored: give the
		// agent's retry, which takes the key over with this payment and
		// delivers, time to come before settling it only to credit it back.
		got, err := e.store.ResolvePayment(ctx, p.Caller, p.Ref, store.PaymentOutcome{State: store.PaymentPending,
			Reason: "waiting for the agent's retry"}, wait, e.now())
		if err != nil {
			return store.Payment{}, storeError("resolve payment", err)
		}
		return got, nil
	}
	s, err := e.perCall.Settle(ctx, railPayment(p))
	now := e.now()
	expiry := p.ValidBefore
	if expiry.IsZero() {
		expiry = p.CreatedAt.Add(time.Hour)
	}
	var rej *pay.RejectedError
	var out store.PaymentOutcome
	switch {
	case err == nil:
		out = store.PaymentOutcome{State: store.PaymentSettled, Transaction: s.Transaction}
	case errors.As(err, &rej) && rej.Code == pay.ReasonAlreadySettled:
		out = store.PaymentOutcome{State: store.PaymentSettled}
	case errors.As(err, &rej) && !rej.MaybeMoved:
		out = store.PaymentOutcome{State: store.PaymentFailed, Reason: rej.Code}
	case now.Before(expiry.Add(UnresolvedGrace)):
		out = store.PaymentOutcome{State: store.PaymentPending, Reason: err.Error()}
	case p.Delivered:
		out = store.PaymentOutcome{State: store.PaymentFailed, Reason: "unresolved: " + err.Error()}
	default:
		// Credited back, as if it had moved (ResolvePayment credits a
		// settled payment whose key holds no delivered answer).
		out = store.PaymentOutcome{State: store.PaymentSettled, Reason: "unresolved: " + err.Error()}
	}
	next := now.Add(min(time.Duration(1<<min(p.Attempts, 12))*time.Second, time.Hour))
	got, err := e.store.ResolvePayment(ctx, p.Caller, p.Ref, out, next, now)
	if err != nil {
		return store.Payment{}, storeError("resolve payment", err)
	}
	e.logger.LogAttrs(ctx, slog.LevelInfo, "payment.reconcile", paymentAttrs(got)...)
	return got, nil
}

// reconcileSoonDelay is how long after a settle without a usable answer
// the engine asks again, in the background, while the authorization is
// still valid.
const reconcileSoonDelay = 2 * time.Second

// reconcileSoon settles the payment again in the background after
// reconcileSoonDelay, if it is still pending (the cron is the backstop).
func (e *Engine) reconcileSoon(ctx context.Context, caller, ref string) {
	e.background(ctx, func(ctx context.Context) {
		if sleep(ctx, reconcileSoonDelay) != nil {
			return
		}
		p, err := e.store.PaymentByRef(ctx, caller, ref)
		if err != nil || p.State != store.PaymentPending {
			return
		}
		_, _ = e.reconcileOne(ctx, p)
	})
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

// Losses lists at most limit per-call payments whose answer was delivered
// and whose settle then failed: the publisher's recorded losses, for the
// admin's attention list.
func (e *Engine) Losses(ctx context.Context, limit int) ([]store.Payment, error) {
	ps, err := e.store.Losses(ctx, limit)
	if err != nil {
		return nil, storeError("list losses", err)
	}
	return ps, nil
}
