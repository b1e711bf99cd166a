// Package engine executes paid tool calls: scoping, claim and charge, wait-then-replay, the upstream under
// heartbeats, complete or refund, and the accounts side (credits, callers, balances, traces). It is the only
// package of the HTTP side that moves money or writes to the store; the REST, MCP and admin surfaces translate
// requests into its calls and its errors into problems (package problem).
package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/pay"
	"github.com/toolgate/toolgate-go/handler/safejson"
	"github.com/toolgate/toolgate-go/store"
)

// DefaultWaitForInProgress is how long a duplicate waits for an in-flight
// call when Config.WaitForInProgress is zero.
const DefaultWaitForInProgress = 5 * time.Second

// Waiting for an in-flight duplicate: the first poll comes after about
// pollInitial, then the delay doubles up to pollMax, each with jitter in
// [d/2, d]. A 1 s upstream costs a waiter about 7 polls. When the tool's
// latency is known, polls come every pollMax at most until pollMargin after
// the expected completion, then back off from pollSoon: an answer that is a
// little late (the owner's Complete under load) is read within about 10 ms
// instead of 25, and a 1 s upstream costs a waiter about 3 polls.
const (
	pollInitial = 25 * time.Millisecond
	pollMax     = 500 * time.Millisecond
	// pollMargin is how long after the expected completion a waiter polls.
	pollMargin = 5 * time.Millisecond
	// pollSoon is the first backoff after a poll at the expected completion.
	pollSoon = 10 * time.Millisecond
)

// Outcome is what one call did, as logged and returned in CallResult.
type Outcome string

// Call outcomes.
const (
	// OutcomeExecuted means this request called the upstream and stored a
	// 2xx answer.
	OutcomeExecuted Outcome = "executed"
	// OutcomeReplayed means the key's stored answer was returned at once.
	OutcomeReplayed Outcome = "replayed"
	// OutcomeWaited means the request waited for an in-flight duplicate and
	// returned its stored answer.
	OutcomeWaited Outcome = "waited"
	// OutcomeMismatch means the key was used with a different input (422).
	OutcomeMismatch Outcome = "mismatch"
	// OutcomeInsufficient means the balance did not cover the price (402).
	OutcomeInsufficient Outcome = "insufficient"
	// OutcomeRefunded means the upstream was called, and failed or rejected
	// the input, and the charge was returned.
	OutcomeRefunded Outcome = "refunded"
	// OutcomeFailed is everything else: a rejected request, a store error,
	// an upstream failure that could not be refunded, a lost lease.
	OutcomeFailed Outcome = "failed"
)

// CallRequest is one paid tool call.
type CallRequest struct {
	Caller store.Caller // an authenticated caller (see Engine.Authenticate)
	Tool   string
	Key    string // the client's idempotency key, 1..255 printable ASCII
	Input  []byte // the tool's JSON input
	// Header holds the caller's request headers; only the tool's
	// ForwardHeaders are sent upstream. Nil is fine.
	Header http.Header
	// Payment, when set, pays this call per request (x402) instead of a
	// prepaid balance: Caller is then ignored, the payment's payer is the
	// caller, and Key may be "" (the payment names one).
	Payment *pay.Payment
	// fallbackFor names the tool this call answers for (a fallback).
	fallbackFor string
}

// CallResult is the gateway's answer to a call. Body is exactly what was
// stored for the key, so every replay is byte-identical to the first answer.
type CallResult struct {
	StatusCode  int    // 200, or 424 when the upstream rejected the input (4xx)
	ContentType string // application/json, or application/problem+json for 424
	Body        []byte // the envelope: tool, output, upstream status, receipt
	Replayed    bool   // the answer was stored by an earlier request
	// Receipt is this request's receipt; a replay's is in Body only (the
	// original receipt, as stored), and a waiter's is the owner's.
	Receipt Receipt
	Outcome Outcome
	// Payment is the per-call payment's state, for a call paid per
	// request.
	Payment *PaymentInfo
	// FallbackFor names the tool the caller asked for when this answer is
	// its fallback's (the asked tool could not be paid for).
	FallbackFor string
}

// Receipt is the money part of an answer. A replay carries the original
// receipt.
type Receipt struct {
	CallID   string `json:"callId"`
	Tool     string `json:"tool"`
	Price    string `json:"price"`
	Amount   string `json:"amount"` // net amount charged: the price, or 0 if refunded or free
	Currency string `json:"currency"`
	// BalanceAfter is the balance right after the charge (or the refund);
	// empty for a free tool.
	BalanceAfter string    `json:"balanceAfter,omitempty"`
	Refunded     bool      `json:"refunded"`
	At           time.Time `json:"at"`
	// Rail and Payer name a per-call payment ("x402" and the payer's
	// address); empty for prepaid and free calls.
	Rail  string `json:"rail,omitempty"`
	Payer string `json:"payer,omitempty"`
	// Tier is "free" for a call of the tool's free tier (Amount is then 0).
	// QuotaRemaining is how many free calls the caller has left in the
	// window after this one (absent when a takeover inherited the unit and
	// did not read the usage), and QuotaResetsAt when the window ends.
	Tier string `json:"tier,omitempty"`
	// FallbackFor names the tool that was asked for, when this answer is
	// its fallback's: that tool could not be paid for.
	FallbackFor    string     `json:"fallbackFor,omitempty"`
	QuotaRemaining *int64     `json:"quotaRemaining,omitempty"`
	QuotaResetsAt  *time.Time `json:"quotaResetsAt,omitempty"`
	// Metered is a metered price's account of the call (Amount is then
	// what was captured, and Price the maximum that was held).
	Metered *MeteredReceipt `json:"metered,omitempty"`
}

// MeteredReceipt is the metered part of a receipt.
type MeteredReceipt struct {
	Max string `json:"max"`           // held while the call ran
	Per string `json:"per,omitempty"` // the price of one unit (absent if the tool is no longer metered)
	// Units is what the upstream reported in its usage header; absent when
	// it reported nothing usable, and the maximum was charged.
	Units string `json:"units,omitempty"`
	// Header names the usage header.
	Header string `json:"usageHeader,omitempty"`
}

// envelope is the stored answer. For an upstream 4xx it is also an RFC 9457
// problem (type, title, status, detail) with the same extra members.
type envelope struct {
	Type     string          `json:"type,omitempty"`
	Title    string          `json:"title,omitempty"`
	Status   int             `json:"status,omitempty"`
	Detail   string          `json:"detail,omitempty"`
	Tool     string          `json:"tool"`
	Output   json.RawMessage `json:"output"`
	Upstream upstreamInfo    `json:"upstream"`
	Receipt  Receipt         `json:"receipt"`
}

type upstreamInfo struct {
	Status      int    `json:"status"`
	ContentType string `json:"contentType,omitempty"`
	// Encoding says how output holds the body: "json" (the JSON itself),
	// "text" (a string), "base64" (a string), or "" for an empty body.
	Encoding string `json:"encoding,omitempty"`
}

// Engine executes paid tool calls: scoping, claim, wait-then-replay, charge,
// upstream with heartbeats, complete or refund. It knows nothing of HTTP
// routing, so the REST and MCP surfaces share it.
type Engine struct {
	store     store.Store
	catalog   *catalog.Catalog
	upstream  Upstream
	now       func() time.Time
	logger    *slog.Logger
	wait      time.Duration // <= 0: fail fast
	rand      io.Reader
	callers   *callerCache
	maxStored int
	statusOf  func(error) int
	checkout  pay.Checkout
	topups    TopupPolicy
	perCall   pay.PerCall
	flights   flights   // executions in flight here, for local waiters
	latency   latencies // observed execution time per tool, for remote waiters
	// Usage counts that no call writes itself (stats.go).
	pending    pendingUsage
	flushEvery time.Duration
	background func(ctx context.Context, fn func(context.Context))
}

// Config configures New.
type Config struct {
	// Store holds records, the ledger and callers. Required.
	Store store.Store
	// Catalog lists the tools (see catalog.ParseCatalog). Required.
	Catalog *catalog.Catalog
	// Upstream calls the tools. Required: HTTPUpstream natively, a
	// fetch-based SendFunc in the worker.
	Upstream Upstream
	// NowFunc is the clock; nil means time.Now.
	NowFunc func() time.Time
	// Logger gets one line per call; nil means JSON lines on stderr.
	Logger *slog.Logger
	// WaitForInProgress is how long a duplicate waits for an in-flight call
	// before giving up with an *InProgressError; zero means
	// DefaultWaitForInProgress (5 s), negative means not at all (fail fast).
	WaitForInProgress time.Duration
	// Rand is the source of owner ids, call ids and caller keys; nil means
	// crypto/rand.Reader.
	Rand io.Reader
	// CallerCacheTTL is how long a successful caller-key lookup is
	// remembered in memory; zero means one minute, negative disables it.
	CallerCacheTTL time.Duration
	// StatusFunc maps a call's error to the HTTP status its log line
	// carries (the surfaces' mapping, package problem); nil logs 500.
	StatusFunc func(error) int
	// Checkout is the rail that sells prepaid top-ups; nil disables
	// top-ups (ErrTopupsDisabled).
	Checkout pay.Checkout
	// Topups limits the top-ups Checkout sells. Required with Checkout.
	Topups TopupPolicy
	// PerCall is the rail that pays calls per request (x402); nil refuses
	// per-call payments (ErrPerCallDisabled).
	PerCall pay.PerCall
	// BackgroundFunc runs fn after the response, keeping the request's
	// event alive until it returns (the worker's waitUntil); nil runs fn on
	// a new goroutine with ctx's values and no cancellation.
	BackgroundFunc func(ctx context.Context, fn func(context.Context))
	// UsageFlushInterval is how long usage counts that no call writes
	// itself wait in memory before a background flush; zero means
	// DefaultUsageFlushInterval (see stats.go).
	UsageFlushInterval time.Duration
}

// New returns an Engine for cfg. It returns an error when Store, Catalog or
// Upstream is missing.
func New(cfg Config) (*Engine, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("new engine: Config.Store is required")
	case cfg.Catalog == nil:
		return nil, errors.New("new engine: Config.Catalog is required")
	case cfg.Upstream == nil:
		return nil, errors.New("new engine: Config.Upstream is required")
	}
	e := &Engine{
		store: cfg.Store, catalog: cfg.Catalog, upstream: cfg.Upstream,
		now: cfg.NowFunc, logger: cfg.Logger, wait: cfg.WaitForInProgress, rand: cfg.Rand,
		maxStored: store.DefaultMaxResponseBytes, statusOf: cfg.StatusFunc,
		checkout: cfg.Checkout, topups: cfg.Topups, perCall: cfg.PerCall,
		flushEvery: cfg.UsageFlushInterval, background: cfg.BackgroundFunc,
	}
	if e.checkout != nil && len(e.topups.Limits) == 0 {
		return nil, errors.New("new engine: Config.Topups needs a currency when Config.Checkout is set")
	}
	if e.flushEvery <= 0 {
		e.flushEvery = DefaultUsageFlushInterval
	}
	if e.background == nil {
		e.background = func(ctx context.Context, fn func(context.Context)) { go fn(context.WithoutCancel(ctx)) }
	}
	if e.statusOf == nil {
		e.statusOf = func(error) int { return http.StatusInternalServerError }
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.logger == nil {
		e.logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	switch {
	case e.wait == 0:
		e.wait = DefaultWaitForInProgress
	case e.wait < 0:
		e.wait = 0
	}
	if e.rand == nil {
		e.rand = rand.Reader
	}
	ttl := cfg.CallerCacheTTL
	if ttl == 0 {
		ttl = time.Minute
	}
	if ttl > 0 {
		e.callers = &callerCache{ttl: ttl, max: 4096, m: map[[32]byte]cachedCaller{}}
	}
	return e, nil
}

// Catalog returns the engine's catalog.
func (e *Engine) Catalog() *catalog.Catalog { return e.catalog }

// Now returns the engine's clock reading.
func (e *Engine) Now() time.Time { return e.now() }

// Logger returns the engine's logger.
func (e *Engine) Logger() *slog.Logger { return e.logger }

// Call executes req once per (caller, tool, key): the first request charges,
// calls the upstream and stores the answer; duplicates replay it, or wait
// for it while it runs. It logs one line. Errors: ErrUnauthorized (no
// caller), ErrUnknownTool, ErrInvalidIdempotencyKey, *InvalidInputError,
// *InputSchemaError (before any claim: nothing charged or stored),
// store.ErrFingerprintMismatch, *store.InsufficientFundsError,
// *InProgressError, *UpstreamError, ErrLostLease (taken over twice), and
// *StoreError; the HTTP surface maps them to problems in one function.
func (e *Engine) Call(ctx context.Context, req CallRequest) (res CallResult, err error) {
	ctx, rt := roundTripsFrom(ctx)
	l := callLog{start: e.now(), caller: req.Caller.ID, tool: req.Tool}
	defer func() {
		if v := recover(); v != nil {
			e.logCall(ctx, l, rt, CallResult{}, fmt.Errorf("panic: %v", v))
			panic(v)
		}
		e.logCall(ctx, l, rt, res, err)
		e.countOutcome(ctx, req, res, err)
	}()
	res, err = e.call(ctx, req, &l)
	if fb, ok := e.fallbackFor(req, err); ok {
		// The tool could not be paid for: its fallback answers instead,
		// under the same key (its own record, scoped to the fallback tool),
		// marked as such. The first tool's key was failed, so a retry after
		// a top-up runs it.
		req.Tool, req.fallbackFor = fb, req.Tool
		res, err = e.call(ctx, req, &l)
		if err == nil {
			res.FallbackFor = req.fallbackFor
		}
		return res, e.paymentRequired(err, fb)
	}
	return res, e.paymentRequired(err, req.Tool)
}

// fallbackFor returns the tool that answers req instead of a 402: the
// catalog's fallback of a prepaid call refused for money.
func (e *Engine) fallbackFor(req CallRequest, err error) (string, bool) {
	if req.Payment != nil || req.fallbackFor != "" || !errors.Is(err, store.ErrInsufficientFunds) {
		return "", false
	}
	t, ok := e.catalog.Tool(req.Tool)
	if !ok || t.Fallback == "" {
		return "", false
	}
	return t.Fallback, true
}

// attempt is one request's view of one scoped key.
type attempt struct {
	e      *Engine
	tool   catalog.Tool
	caller store.Caller
	key    string // scoped
	input  []byte // canonical
	header http.Header
	// payment is the per-call payment the request presented, nil for a
	// prepaid or free call; bound is the key's payment as the last claim
	// left it.
	payment *pay.Payment
	bound   store.Payment
	// window is the free tier's window at the first claim, when the tool
	// has one.
	window, windowEnd time.Time
	// fallbackFor names the tool this attempt answers for, as its fallback.
	fallbackFor string
}

func (e *Engine) call(ctx context.Context, req CallRequest, l *callLog) (CallResult, error) {
	if req.Payment != nil {
		return e.callPerCall(ctx, req, l)
	}
	tool, ok := e.catalog.Tool(req.Tool)
	if req.Caller.ID == "" {
		if ok && tool.X402 != nil && e.perCall != nil {
			// No account: the tool is sold per call.
			return CallResult{}, &PaymentRequiredError{X402: tool.X402}
		}
		return CallResult{}, ErrUnauthorized
	}
	if !ok {
		return CallResult{}, fmt.Errorf("%w: %q", ErrUnknownTool, req.Tool)
	}
	if err := ValidateIdempotencyKey(req.Key); err != nil {
		return CallResult{}, err
	}
	input, canonical, err := decodeInput(req.Input)
	if err != nil {
		return CallResult{}, err
	}
	if err := checkInput(tool, input); err != nil {
		return CallResult{}, err
	}
	a := &attempt{e: e, tool: tool, caller: req.Caller, key: ScopedKey(req.Caller.ID, tool.Name, req.Key),
		input: canonical, header: req.Header, fallbackFor: req.fallbackFor}
	l.key = logKey(a.key)
	owner, err := e.newID("o_")
	if err != nil {
		return CallResult{}, err
	}
	// One owner for the whole request: a poll that wins a takeover, or a
	// claim retried after a lost reply, is the same attempt.
	p := store.ClaimParams{Key: a.key, Owner: owner, Fingerprint: Fingerprint(tool.Name, canonical),
		Now: e.now(), Lease: tool.Lease, TTL: tool.TTL, Tool: tool.Name, CallerID: req.Caller.ID}
	if tool.Free != nil {
		a.window, a.windowEnd = tool.Free.Per.Window(p.Now)
	}
	// How long a duplicate waits for a claim in progress here: the wait's
	// bound (pollMax when duplicates fail fast), and the lease, after which
	// an owner's claim is stale anyway.
	joinLimit := min(tool.Lease, max(e.wait, pollMax))
	c, leader := e.flights.claim(p.Key, p.Fingerprint, joinLimit)
	if !leader {
		if res, answered, err := a.joinClaim(ctx, p, c, joinLimit); answered {
			return res, err
		}
		// The claim it joined failed or is stuck, or so did the execution
		// that claim won: claim as any request does, now.
		c, p.Now = nil, e.now()
	}
	cr, paid, fl, err := a.claimFirst(ctx, p, c)
	if err != nil {
		return CallResult{}, storeError("claim key", err)
	}
	switch cr.Outcome {
	case store.OutcomeCompleted:
		return replay(cr.Record, OutcomeReplayed)
	case store.OutcomeClaimed:
		res, err := a.executeShared(ctx, fenceOf(cr.Record), p.Fingerprint, paid, fl)
		if errors.Is(err, ErrLostLease) {
			// Another attempt took the key over (our lease ran out before a
			// heartbeat got through): it executes, we wait for its answer.
			return a.waitThenReplay(ctx, p, cr.Record)
		}
		return res, err
	}
	return a.waitThenReplay(ctx, p, cr.Record)
}

// claimFirst is claim for a request that leads the claim c of its key on
// this engine (nil: none): it starts the execution's flight when the claim
// wins the key, then publishes the claim's outcome, with that flight, to
// the requests that joined c.
func (a *attempt) claimFirst(ctx context.Context, p store.ClaimParams, c *claiming) (cr store.ClaimResult, paid *chargeOutcome, fl *flight, err error) {
	if c == nil {
		cr, paid, err = a.claim(ctx, p)
		return cr, paid, nil, err
	}
	published := false
	defer func() {
		if !published { // a panic: the joiners claim on their own
			a.e.flights.claimed(p.Key, c, false, store.Record{}, nil)
		}
	}()
	cr, paid, err = a.claim(ctx, p)
	if err == nil && cr.Outcome == store.OutcomeClaimed {
		fl = a.e.flights.start(a.key, p.Fingerprint)
	}
	published = true
	a.e.flights.claimed(p.Key, c, err == nil, cr.Record, fl)
	return cr, paid, fl, err
}

// joinClaim answers a request from the claim c that another request on this
// engine leads for the same key and input, once it returned: the replay of
// the completed record it read, the answer of the execution it won here, or
// a wait for the attempt that holds the key (waitThenReplay, which claims
// when that attempt fails). It claims nothing itself, and reports answered
// false when it cannot answer (the claim failed or did not return within
// limit, the execution it won failed, the record it read expired): the
// request then claims on its own.
func (a *attempt) joinClaim(ctx context.Context, p store.ClaimParams, c *claiming, limit time.Duration) (res CallResult, answered bool, err error) {
	select {
	case <-c.done: // returned already
	default:
		t := time.NewTimer(limit - time.Since(c.started))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return CallResult{}, true, fmt.Errorf("wait for in-progress call: %w", ctx.Err())
		case <-t.C:
			return CallResult{}, false, nil
		case <-c.done:
		}
	}
	if !c.ok {
		return CallResult{}, false, nil
	}
	if c.exec != nil {
		select {
		case <-c.exec.done: // already answered
			if !c.exec.ok {
				return CallResult{}, false, nil
			}
			res = c.exec.res
			res.Replayed, res.Outcome = true, OutcomeWaited
			return res, true, nil
		default: // waitThenReplay waits for it
		}
	}
	if c.rec.Status == store.StatusCompleted {
		if !a.e.now().Before(c.rec.ExpiresAt) {
			return CallResult{}, false, nil
		}
		res, err = replay(c.rec, OutcomeReplayed)
		return res, true, err
	}
	res, err = a.waitThenReplay(ctx, p, c.rec)
	return res, true, err
}

// waitThenReplay waits for the attempt that holds the key. It polls with
// Peek, a read that never contends for the write lock (one round trip per
// poll), under capped exponential backoff with jitter, and replays once the
// record is completed. When the record failed, its lease expired or it
// vanished, one Claim decides: take over and execute (once), replay, or go on
// waiting. When the wait runs out it returns an *InProgressError. The wait is
// the sum of the sleeps, so it does not depend on the injected clock.
func (a *attempt) waitThenReplay(ctx context.Context, p store.ClaimParams, rec store.Record) (CallResult, error) {
	e := a.e
	// Polls aim at the moment the answer is expected (not jittered early: a
	// poll that comes too soon costs a whole backoff step), in steps of at
	// most pollMax; once it is due, or when the tool's latency is unknown,
	// they back off with jitter (see pollSoon).
	first, backoff := true, pollInitial
	var waited time.Duration
	var outage error        // the last poll's store failure; a later good poll clears it
	var notBefore time.Time // a poll after a local execution failed reads afresh
	for {
		if waited >= e.wait {
			if outage != nil {
				return CallResult{}, storeError("poll key", outage)
			}
			return CallResult{}, &InProgressError{RetryAfter: e.retryAfter(rec, a.tool.Lease)}
		}
		var d time.Duration
		due, known := a.answerDue(rec)
		switch left := due.Sub(e.now()); {
		case known && (first || left > pollMargin):
			d = min(max(left, pollMargin), pollMax)
			backoff = pollSoon
		case first:
			d = pollInitial
		default:
			d = jitter(backoff)
			backoff = min(2*backoff, pollMax)
		}
		first = false
		d = min(d, e.wait-waited)
		start := time.Now()
		// A local owner is awaited until its lease runs out at the latest:
		// then the store says whether heartbeats renewed it, or a takeover is
		// due (its heartbeats may be failing while it runs).
		limit := min(e.wait-waited, max(rec.LeaseExpiresAt.Sub(e.now()), 0)+pollMargin)
		shared, ok, woke, err := e.flights.wait(ctx, p.Key, p.Fingerprint, d, max(limit, d))
		if err != nil {
			return CallResult{}, fmt.Errorf("wait for in-progress call: %w", err)
		}
		if ok {
			// The execution in flight on this engine stored its answer.
			shared.Replayed, shared.Outcome = true, OutcomeWaited
			return shared, nil
		}
		if woke {
			d = time.Since(start) // it failed: ask the store at once
			notBefore = time.Now()
		} else {
			d = max(d, time.Since(start))
		}
		waited += d
		now := e.now()
		peeked, err := e.flights.peek(ctx, p.Key, notBefore, func(ctx context.Context) (store.Record, error) { return e.store.Peek(ctx, p.Key) })
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			if transient(err) {
				// A poll is a read: poll again while the wait lasts.
				outage = err
				continue
			}
			return CallResult{}, storeError("poll key", err)
		}
		outage = nil
		if err == nil && peeked.Fingerprint == p.Fingerprint {
			rec = peeked
			if rec.Status == store.StatusCompleted && now.Before(rec.ExpiresAt) {
				return a.replay(ctx, rec, OutcomeWaited)
			}
			if rec.Status == store.StatusInProgress && now.Before(rec.LeaseExpiresAt) && rec.Owner != p.Owner {
				continue
			}
			// Held by this request itself (a claim whose reply was lost),
			// or free: the claim below decides.
		}
		p.Now = now
		cr, paid, err := a.claim(ctx, p)
		if err != nil {
			if transient(err) {
				// Safe to repeat: a claim whose reply was lost is ours, and
				// the same owner claiming again gets it back.
				outage = err
				continue
			}
			return CallResult{}, storeError("claim key", err)
		}
		switch cr.Outcome {
		case store.OutcomeCompleted:
			return a.replay(ctx, cr.Record, OutcomeWaited)
		case store.OutcomeClaimed:
			return a.executeShared(ctx, fenceOf(cr.Record), p.Fingerprint, paid, nil)
		}
		rec = cr.Record
	}
}

// claim claims the key for a request, or for a waiter that may take it
// over: with the request's payment bound, for a call paid per request. A
// paid tool, or one with a free tier, claims and charges (or takes a unit
// of free quota) in one step, one round trip on D1 and SQLite; the charge
// or the unit is taken only if this claim wins the key, and paid says what
// came of it.
func (a *attempt) claim(ctx context.Context, p store.ClaimParams) (cr store.ClaimResult, paid *chargeOutcome, err error) {
	cr, paid, err = a.claimStore(ctx, p)
	if err == nil && cr.Outcome == store.OutcomeClaimed && !a.e.now().Before(cr.Record.LeaseExpiresAt) {
		// The claim won, but its reply came after its lease ran out (a
		// stalled round trip): another request may hold the key by now. In
		// progress, so the store decides again before anything runs (the
		// same owner gets the key back, with its charge, if nobody took it).
		cr.Outcome = store.OutcomeInProgress
	}
	return cr, paid, err
}

// claimStore is claim's round trip.
func (a *attempt) claimStore(ctx context.Context, p store.ClaimParams) (cr store.ClaimResult, paid *chargeOutcome, err error) {
	if a.payment != nil {
		cr, err = a.claimPaid(ctx, p)
		return cr, nil, err
	}
	t := a.tool
	if t.Price <= 0 && t.Free == nil {
		cr, err = a.e.store.Claim(ctx, p)
		if err != nil {
			return cr, nil, err
		}
		// A free tool charges nothing, but a takeover may inherit a charge
		// taken under an earlier catalog: takeCharge keeps it the key's.
		return cr, &chargeOutcome{inherited: cr.Record.Charge, noBalance: true}, nil
	}
	cp := store.ClaimChargeParams{ClaimParams: p, Caller: a.caller.ID, Currency: t.Currency, Amount: t.Price,
		KeyID: a.caller.KeyID, Hold: t.Metered != nil}
	if t.Free != nil {
		// The window of the request's first claim: a takeover after a long
		// wait still counts in it.
		cp.Quota = &store.Quota{Limit: t.Free.Calls, Window: a.window}
	}
	ccr, err := a.e.store.ClaimCharge(ctx, cp)
	if err != nil {
		return store.ClaimResult{}, nil, err
	}
	return ccr.ClaimResult, &chargeOutcome{res: ccr.Charge, err: ccr.ChargeErr, quota: ccr.Quota,
		inherited: ccr.Record.Charge}, nil
}

// replay replays a completed key, with its payment's receipt for a call
// paid per request.
func (a *attempt) replay(ctx context.Context, rec store.Record, o Outcome) (CallResult, error) {
	if a.payment != nil {
		return a.replayPaid(ctx, rec, o)
	}
	return replay(rec, o)
}

// answerDue returns when the execution that holds rec is expected to have
// stored its answer, plus pollMargin: from the tool's observed latency and
// when the record was claimed. known is false while the latency is unknown.
func (a *attempt) answerDue(rec store.Record) (due time.Time, known bool) {
	exp := a.e.latency.expected(a.tool.Name)
	if exp <= 0 {
		return time.Time{}, false
	}
	claimed := rec.UpdatedAt // a heartbeat moves it, so this errs on the late side
	if rec.Generation == 1 {
		claimed = rec.CreatedAt
	}
	return claimed.Add(exp + pollMargin), true
}

// executeShared is execute, published to the waiters on this engine (see
// flights) through fl, or a flight of its own if fl is nil, and timed for
// the tool's observed latency.
func (a *attempt) executeShared(ctx context.Context, f store.Fence, fingerprint string, paid *chargeOutcome, fl *flight) (res CallResult, err error) {
	if fl == nil {
		fl = a.e.flights.start(a.key, fingerprint)
	}
	published := false
	defer func() {
		if !published { // a panic: waiters go back to the store
			a.e.flights.finish(a.key, fl, CallResult{}, false)
		}
	}()
	start := time.Now()
	if a.payment != nil {
		res, err = a.executePaid(ctx, f)
	} else {
		res, err = a.execute(ctx, f, paid)
	}
	if err == nil {
		a.e.latency.observe(a.tool.Name, time.Since(start))
	}
	published = true
	a.e.flights.finish(a.key, fl, res, err == nil)
	return res, err
}

// chargeOutcome is a charge (or a unit of free quota) already attempted
// with the claim (ClaimCharge).
type chargeOutcome struct {
	res   store.ChargeResult
	err   error
	quota store.QuotaResult
	// inherited is the key's charge as the claim found it: what a
	// takeover inherits when res.Charged is false.
	inherited store.Charge
	// noBalance: the claim read no balance (a free tool's plain claim).
	noBalance bool
}

// inheritedCharge returns the charge a won claim inherited (a takeover of
// an attempt that charged), or nil.
func (c *chargeOutcome) inheritedCharge() *store.Charge {
	if c.err != nil || c.res.Charged || c.inherited.State != store.ChargeCharged {
		return nil
	}
	return &c.inherited
}

// money is what a claimed key holds: a charge (and the balance after it),
// or a unit of free quota (and the window's usage after it, 0 if
// inherited).
type money struct {
	charged, free bool
	balance, used int64
	// amount is the key's charge; hold says it is a metered hold of
	// amount (the maximum), taken under whatever the catalog said then.
	amount int64
	hold   bool
	// noBalance: the balance was not read (a free tool's takeover).
	noBalance bool
}

// held reports whether the key holds a charge or a unit to give back.
func (m money) held() bool { return m.charged || m.free }

// execute runs a claimed key in named steps: take the charge (unless paid
// holds the charge taken with the claim), call the upstream under
// heartbeats, then store the answer (2xx, and 4xx under the 4xx rule) or
// refund and fail (anything else).
func (a *attempt) execute(ctx context.Context, f store.Fence, paid *chargeOutcome) (CallResult, error) {
	// The caller going away must not strand a charged key half-way.
	ctx = context.WithoutCancel(ctx)
	defer a.returnOnPanic(ctx, f)
	m, err := a.takeCharge(ctx, f, paid)
	if err != nil {
		return CallResult{}, err
	}
	started := time.Now()
	up := a.callUpstream(ctx, f)
	up.took = time.Since(started)
	if up.lost {
		// The new owner holds the key and inherits its charge; we must not
		// complete, refund or fail it.
		return CallResult{}, ErrLostLease
	}
	// From here on, the final writes retry transient errors (finalwrite.go).
	b := a.finalBudget()
	if ue := a.upstreamFailure(up); ue != nil {
		return CallResult{}, a.refundAndFail(ctx, f, b, ue, m)
	}
	return a.storeAnswer(ctx, f, b, up, m)
}

// returnOnPanic, deferred by execute, leaves the key retryable and its
// charge (ours or inherited) returned when execution panics, then lets the
// recover middleware answer 500.
func (a *attempt) returnOnPanic(ctx context.Context, f store.Fence) {
	if v := recover(); v != nil {
		now := a.e.now()
		_, _, _ = a.e.store.Refund(ctx, f, now)
		_ = a.e.store.Fail(ctx, f, "panic during execution", now)
		panic(v)
	}
}

// takeCharge takes the outcome of the charge (or unit of free quota) made
// with the claim (paid; every prepaid claim makes one, see claim). A
// takeover keeps the charge it inherited, whatever the catalog says now. A
// free tool charges nothing. On insufficient funds nothing was taken and the
// key is failed, so a retry after a top-up runs; the error is the store's
// *InsufficientFundsError. A tool of price 0 whose free quota is used up
// fails the key the same way, with a *QuotaExhaustedError.
func (a *attempt) takeCharge(ctx context.Context, f store.Fence, paid *chargeOutcome) (money, error) {
	e := a.e
	if paid.quota.Free {
		return money{free: true, used: paid.quota.Used}, nil
	}
	if in := paid.inheritedCharge(); in != nil {
		// The abandoned attempt's charge, perhaps taken under another
		// catalog: the capture and the receipt follow it.
		return money{charged: true, balance: paid.res.Balance, noBalance: paid.noBalance, amount: in.Amount,
			hold: in.Hold == store.HoldHeld}, nil
	}
	err := paid.err
	if err == nil && a.tool.Price <= 0 {
		return money{}, nil
	}
	if errors.Is(err, store.ErrQuotaExhausted) {
		err = &QuotaExhaustedError{Tool: a.tool.Name, Calls: a.tool.Free.Calls, Per: a.tool.Free.Per, ResetsAt: a.windowEnd,
			RetryAfter: a.windowEnd.Sub(e.now())}
	}
	if errors.Is(err, store.ErrInsufficientFunds) || errors.Is(err, store.ErrQuotaExhausted) {
		if ferr := e.store.Fail(ctx, f, err.Error(), e.now()); ferr != nil {
			return money{}, errors.Join(err, storeError("fail key", ferr))
		}
		return money{}, err
	}
	if err != nil {
		return money{}, storeError("charge key", err)
	}
	return money{charged: true, balance: paid.res.Balance, amount: a.tool.Price, hold: a.tool.Metered != nil}, nil
}

// storeAnswer builds the answer to a final upstream response (the envelope
// with its receipt; an upstream 4xx is refunded and answered 424) and stores
// it. An answer too large to store is refunded and failed instead.
func (a *attempt) storeAnswer(ctx context.Context, f store.Fence, b *finalBudget, ur upstreamResult, m money) (CallResult, error) {
	e := a.e
	up := ur.resp
	rcpt := Receipt{Tool: a.tool.Name, Price: a.tool.PriceString(), Amount: a.tool.PriceString(),
		Currency: a.tool.Currency, At: store.FromUnixMilli(store.UnixMilli(e.now())), FallbackFor: a.fallbackFor}
	var err error
	if rcpt.CallID, err = e.newID("call_"); err != nil {
		return CallResult{}, err
	}
	if m.charged {
		rcpt.BalanceAfter = store.FormatAmount(m.balance, a.tool.Currency)
	}
	if m.free {
		rcpt.Tier, rcpt.Amount = "free", store.FormatAmount(0, a.tool.Currency)
		resets := a.windowEnd
		rcpt.QuotaResetsAt = &resets
		if m.used > 0 {
			left := max(a.tool.Free.Calls-m.used, 0)
			rcpt.QuotaRemaining = &left
		}
	}
	var capture *int64
	switch {
	case m.charged && m.hold:
		// Capture what the call used, at most the hold (the maximum when
		// the upstream did not say, or the tool is no longer metered; a
		// 4xx is refunded below) and release the rest.
		used, ok := a.tool.Cost(up.Usage)
		used = min(used, m.amount)
		capture = &used
		rcpt.Metered = &MeteredReceipt{Max: store.FormatAmount(m.amount, a.tool.Currency)}
		if mt := a.tool.Metered; mt != nil {
			rcpt.Metered.Per, rcpt.Metered.Header = mt.Per, mt.UsageHeader
			if ok {
				rcpt.Metered.Units = strings.TrimSpace(up.Usage)
			}
		}
		rcpt.Amount = store.FormatAmount(used, a.tool.Currency)
		rcpt.BalanceAfter = store.FormatAmount(m.balance+m.amount-used, a.tool.Currency)
	case m.charged:
		rcpt.Amount = store.FormatAmount(m.amount, a.tool.Currency)
	}
	if m.noBalance {
		rcpt.BalanceAfter = ""
	}
	env := envelope{Tool: a.tool.Name, Upstream: upstreamInfo{Status: up.StatusCode, ContentType: up.ContentType}}
	env.Output, env.Upstream.Encoding = encodeOutput(up)
	res := CallResult{StatusCode: http.StatusOK, ContentType: "application/json", Outcome: OutcomeExecuted}
	if up.StatusCode >= 400 {
		// The 4xx rule: the upstream's rejection is the final answer for
		// this key. It is refunded and stored, and replays return it.
		rcpt.Amount = store.FormatAmount(0, a.tool.Currency)
		if m.held() {
			refunded, bal, err := a.refund(ctx, f, b)
			if err != nil {
				return CallResult{}, err
			}
			rcpt.Refunded = refunded
			if m.charged {
				rcpt.BalanceAfter = store.FormatAmount(bal, a.tool.Currency)
			} else if rcpt.QuotaRemaining != nil && refunded {
				*rcpt.QuotaRemaining++ // the unit came back
			}
			res.Outcome = OutcomeRefunded
		}
		env.Type, env.Title, env.Status = ProblemTypeBase+"upstream-rejected", "Upstream rejected the input", http.StatusFailedDependency
		env.Detail = fmt.Sprintf("the tool answered %d; nothing was charged; this answer is final for this Idempotency-Key and replays", up.StatusCode)
		res.StatusCode, res.ContentType = http.StatusFailedDependency, "application/problem+json"
	}
	env.Receipt = rcpt
	res.Receipt = rcpt
	if res.Body, err = safejson.MarshalNoEscape(env); err != nil {
		return CallResult{}, fmt.Errorf("encode answer: %w", err)
	}
	if len(res.Body) > e.maxStored {
		return CallResult{}, a.refundAndFail(ctx, f, b, &UpstreamError{StatusCode: up.StatusCode,
			Reason: fmt.Sprintf("the upstream answer is too large to store (limit %d bytes)", e.maxStored)}, m.unlessRefunded(rcpt.Refunded))
	}
	err = a.complete(ctx, f, b, store.Response{StatusCode: res.StatusCode, ContentType: res.ContentType, Body: res.Body},
		a.usageOf(e.now(), ur.took, up.StatusCode), capture)
	if errors.Is(err, store.ErrTooLarge) {
		return CallResult{}, a.refundAndFail(ctx, f, b, &UpstreamError{StatusCode: up.StatusCode,
			Reason: "the upstream answer is too large to store"}, m.unlessRefunded(rcpt.Refunded))
	}
	if err != nil {
		// Unstored after the retries: the key stays in progress until its
		// lease expires, and the next attempt takes over with the charge
		// inherited.
		return CallResult{}, err
	}
	return res, nil
}

// upstreamResult is what one upstream call came to.
type upstreamResult struct {
	resp     UpstreamResponse
	err      error // a network failure or the timeout; any status is a resp
	timedOut bool  // the tool's timeout ran out
	lost     bool  // a heartbeat found the key taken over; the call was cancelled
	took     time.Duration
}

// callUpstream calls the upstream with the tool's timeout while a goroutine
// heartbeats the lease every Lease/3. If a heartbeat finds the key fenced
// out, the upstream call is cancelled and the result is lost.
func (a *attempt) callUpstream(ctx context.Context, f store.Fence) (r upstreamResult) {
	e := a.e
	h := http.Header{}
	for _, name := range a.tool.ForwardHeaders {
		if v := a.header.Values(name); len(v) > 0 {
			h[name] = append([]string(nil), v...)
		}
	}
	for k, v := range a.tool.Headers {
		h.Set(k, v)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Idempotency-Key", upstreamKey(a.key))
	h.Set("User-Agent", "toolgate-go")

	upCtx, cancelUp := context.WithCancelCause(ctx)
	defer cancelUp(nil)
	upCtx, cancelTimeout := context.WithTimeout(upCtx, a.tool.Timeout)
	defer cancelTimeout()

	var isLost atomic.Bool
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.heartbeat(hbCtx, f, func() {
			isLost.Store(true)
			cancelUp(ErrLostLease)
		})
	}()
	defer func() {
		stopHeartbeat()
		wg.Wait()
		r.lost = isLost.Load()
	}()

	ureq := UpstreamRequest{Method: a.tool.Method, URL: a.tool.URL, Header: h, Body: a.input, MaxResponseBytes: int64(e.maxStored)}
	if a.tool.Metered != nil {
		ureq.UsageHeader = a.tool.Metered.UsageHeader
	}
	r.resp, r.err = e.upstream.Do(upCtx, ureq)
	r.timedOut = r.err != nil && errors.Is(upCtx.Err(), context.DeadlineExceeded)
	return r
}

func (a *attempt) heartbeat(ctx context.Context, f store.Fence, onLost func()) {
	t := time.NewTicker(max(a.tool.Lease/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := a.e.now()
		err := a.e.store.Heartbeat(ctx, f, now.Add(a.tool.Lease), now)
		if errors.Is(err, store.ErrFencedOut) {
			onLost()
			return
		}
		// Other errors are transient: the next tick retries while the
		// lease lasts.
	}
}

// upstreamFailure classifies an upstream result: nil for a final answer
// (2xx, 4xx), else the failure to refund.
func (a *attempt) upstreamFailure(r upstreamResult) *UpstreamError {
	up := r.resp
	switch {
	case r.err != nil && r.timedOut:
		return &UpstreamError{Timeout: true, Reason: fmt.Sprintf("the tool did not answer within %s", a.tool.Timeout)}
	case r.err != nil:
		return &UpstreamError{Reason: "the tool could not be reached"}
	case up.StatusCode >= 500:
		return &UpstreamError{StatusCode: up.StatusCode, Reason: fmt.Sprintf("the tool answered %d", up.StatusCode)}
	case up.StatusCode < 200 || up.StatusCode >= 300 && up.StatusCode < 400:
		return &UpstreamError{StatusCode: up.StatusCode, Reason: fmt.Sprintf("the tool answered an unexpected %d", up.StatusCode)}
	case len(up.Body) > a.e.maxStored:
		return &UpstreamError{StatusCode: up.StatusCode,
			Reason: fmt.Sprintf("the tool's answer is larger than %d bytes", a.e.maxStored)}
	case isJSONType(up.ContentType) && safejson.TooDeep(up.Body, safejson.MaxDepth):
		// Stored, it would be parsed again on every MCP replay; deep enough,
		// that recursion kills the isolate's runtime.
		return &UpstreamError{StatusCode: up.StatusCode,
			Reason: fmt.Sprintf("the tool's JSON answer nests deeper than %d levels", safejson.MaxDepth)}
	}
	return nil
}

// unlessRefunded is m, holding nothing once it was refunded.
func (m money) unlessRefunded(refunded bool) money {
	if refunded {
		return money{}
	}
	return m
}

// refundAndFail returns the charge (or the unit of free quota) and marks the key failed, so a retry
// executes again; both retry within b (see finalwrite.go). A refund or fail
// that does not get through leaves the key in progress with its charge; the
// next attempt takes over when the lease expires and inherits the charge, so
// the net charge stays one price.
func (a *attempt) refundAndFail(ctx context.Context, f store.Fence, b *finalBudget, ue *UpstreamError, m money) error {
	ue.Price, ue.Currency = a.tool.Price, a.tool.Currency
	if m.free {
		ue.Price, ue.Free = 0, true
	}
	if m.held() {
		refunded, bal, err := a.refund(ctx, f, b)
		if errors.Is(err, store.ErrFencedOut) {
			return err
		}
		if err != nil {
			return errors.Join(ue, err)
		}
		if m.charged {
			ue.Refunded, ue.Balance = refunded, bal
		} else {
			ue.QuotaReturned = refunded
		}
	}
	if err := a.fail(ctx, f, b, ue.Reason); err != nil {
		return errors.Join(ue, err)
	}
	return ue
}

func replay(rec store.Record, o Outcome) (CallResult, error) {
	if rec.Response == nil {
		return CallResult{}, errors.New("replay key: completed record holds no response")
	}
	// The stored bytes are the answer, receipt included: decoding it here
	// would cost every replay a parse of the whole envelope.
	return CallResult{StatusCode: rec.Response.StatusCode, ContentType: rec.Response.ContentType,
		Body: rec.Response.Body, Replayed: true, Outcome: o}, nil
}

func fenceOf(r store.Record) store.Fence {
	return store.Fence{Key: r.Key, Owner: r.Owner, Generation: r.Generation}
}

// retryAfter estimates when the holder's lease runs out, between 1 s and the
// tool's lease.
func (e *Engine) retryAfter(rec store.Record, lease time.Duration) time.Duration {
	d := rec.LeaseExpiresAt.Sub(e.now())
	return min(max(d, time.Second), max(lease, time.Second))
}

// encodeOutput embeds the upstream body in the envelope: JSON as itself,
// UTF-8 text as a string, anything else as base64.
func encodeOutput(up UpstreamResponse) (json.RawMessage, string) {
	if len(up.Body) == 0 {
		return json.RawMessage("null"), ""
	}
	if isJSONType(up.ContentType) && json.Valid(up.Body) {
		var buf bytes.Buffer
		if json.Compact(&buf, up.Body) == nil {
			return buf.Bytes(), "json"
		}
	}
	if utf8.Valid(up.Body) {
		s, _ := safejson.MarshalNoEscape(string(up.Body))
		return s, "text"
	}
	s, _ := json.Marshal(base64.StdEncoding.EncodeToString(up.Body))
	return s, "base64"
}

// isJSONType reports whether a Content-Type is application/json or +json.
func isJSONType(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// storeError passes the store's answers through (wrapped; a fenced-out
// write also as ErrLostLease) and turns anything else, a failure of the
// database or of the way to it, into a *StoreError, which maps to 503.
func storeError(op string, err error) error {
	switch {
	case errors.Is(err, store.ErrFencedOut):
		return fmt.Errorf("%s: %w: %w", op, ErrLostLease, err)
	case store.IsAnswer(err):
		return fmt.Errorf("%s: %w", op, err)
	}
	return &StoreError{Op: op, Err: err}
}

// newID returns prefix and 12 random bytes in hex.
func (e *Engine) newID(prefix string) (string, error) {
	var b [12]byte
	if _, err := io.ReadFull(e.rand, b[:]); err != nil {
		return "", fmt.Errorf("read random id: %w", err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

// jitter returns a duration in [d/2, d]. It draws from crypto/rand, not
// from the runtime's random state: a worker booted at start-up derives that
// from its boot seed, the same in every isolate, and waiters on isolates
// started together must not back off in step. A draw per poll is cheap.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return d/2 + time.Duration(binary.LittleEndian.Uint64(b[:])%uint64(d/2+1))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
