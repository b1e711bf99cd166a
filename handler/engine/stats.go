package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/store"
)

// DefaultUsageFlushInterval is how long counts that no call writes wait in
// memory before a background flush when Config.UsageFlushInterval is zero.
const DefaultUsageFlushInterval = 5 * time.Second

// Usage counting (see store.Stats for where each counter is written).
//
// A call that executes counts itself with its Complete (usageOf, one atomic
// batch, no extra round trip); its money follows the ledger inside the
// store. What writes nothing (a replay, a wait, a 402, 409 or 422, a
// refunded upstream failure) is added to the engine's pending counts and
// flushed by one background job per engine, which starts with the first
// pending count and writes FlushInterval later (store.AddUsage: one
// statement), so an engine writes these at most once per interval. The job
// runs through Config.BackgroundFunc (the worker's waitUntil), so the
// response never waits for it. If the runtime dies, the pending counts die
// with it: at most one interval's replays, waits, 402/409/422 and failure
// counts of that isolate. A failed flush puts its counts back for the next.

// pendingUsage holds counts not yet written.
type pendingUsage struct {
	mu        sync.Mutex
	rows      map[store.UsageKey]*store.Usage
	scheduled bool
}

// add merges u into the pending counts and reports whether a flush must be
// scheduled (none is).
func (p *pendingUsage) add(u store.Usage) bool {
	u.Hour = store.HourOf(u.Hour)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rows == nil {
		p.rows = map[store.UsageKey]*store.Usage{}
	}
	if row, ok := p.rows[u.UsageKey]; ok {
		row.Add(u)
	} else {
		p.rows[u.UsageKey] = &u
	}
	if p.scheduled {
		return false
	}
	p.scheduled = true
	return true
}

// take removes and returns the pending counts, and clears the schedule.
func (p *pendingUsage) take() []store.Usage {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]store.Usage, 0, len(p.rows))
	for _, u := range p.rows {
		out = append(out, *u)
	}
	p.rows, p.scheduled = nil, false
	return out
}

// usageKeyOf is the counters' row of one call of tool by caller at now.
func usageKeyOf(tool catalog.Tool, caller string, now time.Time) store.UsageKey {
	return store.UsageKey{Hour: store.HourOf(now), Caller: caller, Tool: tool.Name, Currency: tool.Currency}
}

// usageOf is the counters an executed call stores with its Complete: one
// call (free or not) of the caller and of its key, its upstream time, and
// the 4xx class when the answer is a rejection.
func (a *attempt) usageOf(now time.Time, took time.Duration, upstreamStatus int) *store.Usage {
	u := &store.Usage{UsageKey: usageKeyOf(a.tool, a.caller.ID, now), Key: a.caller.KeyID, Calls: 1, LastAt: now}
	if a.tool.Price <= 0 {
		u.FreeCalls = 1
	}
	if upstreamStatus >= 400 {
		u.Fail4xx = 1
	}
	u.ObserveLatency(took)
	return u
}

// countOutcome adds the counts of a call that wrote none itself to the
// pending counts, and schedules a flush.
func (e *Engine) countOutcome(ctx context.Context, req CallRequest, res CallResult, err error) {
	tool, ok := e.catalog.Tool(req.Tool)
	if !ok || req.Caller.ID == "" {
		return
	}
	var u store.Usage
	var ipe *InProgressError
	var ue *UpstreamError
	switch {
	case err == nil && res.Outcome == OutcomeReplayed:
		u.Replays = 1
	case err == nil && res.Outcome == OutcomeWaited:
		u.Waits = 1
	case err == nil:
		return // executed: counted with its Complete
	case errors.Is(err, store.ErrFingerprintMismatch):
		u.R422 = 1
	case errors.Is(err, store.ErrInsufficientFunds):
		u.R402 = 1
	case errors.As(err, &ipe):
		u.R409 = 1
	case errors.As(err, &ue) && ue.Timeout:
		u.FailTimeout = 1
	case errors.As(err, &ue):
		u.Fail5xx = 1
	default:
		return
	}
	now := e.now() // read only here: most calls return above (a clock read crosses into JS in the worker)
	u.UsageKey, u.LastAt = usageKeyOf(tool, req.Caller.ID, now), now
	if e.pending.add(u) {
		e.background(ctx, e.flushLater)
	}
}

// flushLater is the background flush: it waits one interval, then writes
// every pending count in one statement.
func (e *Engine) flushLater(ctx context.Context) {
	// Not the request's round trips: its log line is written already.
	ctx, _ = store.WithRoundTrips(ctx)
	_ = sleep(ctx, e.flushEvery)
	if err := e.FlushUsage(ctx); err != nil {
		e.logger.Error("usage flush failed; the counts wait for the next", "err", err)
	}
}

// FlushUsage writes the pending counts now (the background flush, and
// tests). On an error the counts are pending again.
func (e *Engine) FlushUsage(ctx context.Context) error {
	rows := e.pending.take()
	if len(rows) == 0 {
		return nil
	}
	if err := e.store.AddUsage(ctx, rows); err != nil {
		for _, u := range rows {
			e.pending.add(u)
		}
		return fmt.Errorf("flush usage: %w", err)
	}
	return nil
}

// Usage returns the summed counters q selects (see store.Stats.Usage).
func (e *Engine) Usage(ctx context.Context, q store.UsageQuery) ([]store.Usage, error) {
	us, err := e.store.Usage(ctx, q)
	if err != nil {
		return nil, storeError("read usage", err)
	}
	return us, nil
}

// Calls returns recent records with their entries (see store.Stats.Calls).
func (e *Engine) Calls(ctx context.Context, q store.CallQuery) ([]store.CallSummary, error) {
	cs, err := e.store.Calls(ctx, q)
	if err != nil {
		return nil, storeError("read calls", err)
	}
	return cs, nil
}

// CallerSummaries returns callers with balances (see store.Stats).
func (e *Engine) CallerSummaries(ctx context.Context, limit int) ([]store.CallerSummary, error) {
	cs, err := e.store.CallerSummaries(ctx, limit)
	if err != nil {
		return nil, storeError("read callers", err)
	}
	return cs, nil
}
