package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// FaultKind names one kind of injected database fault.
type FaultKind string

// Fault kinds.
const (
	// FaultBefore fails a call before it reaches the database: nothing is
	// applied (a refused connection, an overloaded database).
	FaultBefore FaultKind = "before"
	// FaultAfter runs the call, commits it, then fails it: the change is
	// applied but the reply is lost, like D1's "Network connection lost"
	// after the write went through. The caller cannot tell it from
	// FaultBefore; only a read tells.
	FaultAfter FaultKind = "after"
	// FaultLatency delays a call before it runs; the call then goes on.
	FaultLatency FaultKind = "latency"
	// FaultOutage fails a call made while the database is down (see
	// FaultClient.StartOutage): nothing is applied.
	FaultOutage FaultKind = "outage"
)

// ErrInjected is matched (errors.Is) by every error a FaultClient injects.
var ErrInjected = errors.New("storetest: injected fault")

// FaultError is the error of an injected fault. It is none of the store's
// sentinel errors, so callers treat it as a transient database failure.
type FaultError struct {
	Kind  FaultKind
	Query string // the statement (the first of a batch), shortened
}

// Error implements error.
func (e *FaultError) Error() string {
	switch e.Kind {
	case FaultAfter:
		return "storetest: injected fault after commit: network connection lost: " + e.Query
	case FaultOutage:
		return "storetest: injected fault: database unavailable: " + e.Query
	}
	return "storetest: injected fault before execution: connection refused: " + e.Query
}

// Is makes errors.Is(err, ErrInjected) true.
func (e *FaultError) Is(target error) bool { return target == ErrInjected }

// FaultConfig says which faults a FaultClient injects. The zero value
// injects nothing.
type FaultConfig struct {
	// Seed seeds the draws. With one goroutine the faults fall on the same
	// calls on every run; with several, the sequence of draws is the same
	// but which call gets which draw depends on their order.
	Seed uint64
	// BeforeRate, AfterRate and LatencyRate are the probabilities, in
	// [0, 1], that a matching call gets that fault. A call gets at most one
	// error (before wins over after) and may get latency as well.
	BeforeRate  float64
	AfterRate   float64
	LatencyRate float64
	// MaxLatency bounds an injected delay, drawn uniformly in
	// [0, MaxLatency]; zero means one millisecond.
	MaxLatency time.Duration
	// MatchFunc selects the statements that may get a fault (a batch
	// matches when any of its statements does); nil matches every call.
	// Outages ignore it.
	MatchFunc func(query string) bool
	// MaxErrors caps the injected errors (before and after, not outages);
	// zero means no cap.
	MaxErrors int64
}

// QueryHasPrefix returns a MatchFunc selecting statements that start with
// prefix once leading white space is trimmed, such as
// "UPDATE idem_records SET status = 'completed'" (Complete).
func QueryHasPrefix(prefix string) func(query string) bool {
	return func(q string) bool { return strings.HasPrefix(strings.TrimSpace(q), prefix) }
}

// FaultCounts are the faults a FaultClient injected, by kind, and the calls
// it saw (a batch is one call).
type FaultCounts struct {
	Calls   int64 `json:"calls"`
	Before  int64 `json:"before"`
	After   int64 `json:"after"`
	Latency int64 `json:"latency"`
	Outage  int64 `json:"outage"`
}

// Errors returns the injected errors of every kind.
func (c FaultCounts) Errors() int64 { return c.Before + c.After + c.Outage }

// String lists the counts, for logs and reports.
func (c FaultCounts) String() string {
	return fmt.Sprintf("calls=%d before=%d after=%d latency=%d outage=%d",
		c.Calls, c.Before, c.After, c.Latency, c.Outage)
}

// FaultClient is a store.DbClient (and a store.Batcher when its inner client
// can batch) that injects faults into the calls it forwards: errors before
// execution, errors after commit, latency, and outages. It is the fake the
// standards allow, for an injected fault; the statements themselves run on
// the real engine. It is safe for concurrent use.
type FaultClient struct {
	inner store.DbClient
	cfg   FaultConfig

	enabled atomic.Bool
	down    atomic.Bool

	mu     sync.Mutex // guards rng and counts
	rng    *rand.Rand
	counts FaultCounts
}

var _ store.Batcher = (*FaultClient)(nil)

// NewFaultClient returns a FaultClient over inner, injecting faults as cfg
// says, enabled.
func NewFaultClient(inner store.DbClient, cfg FaultConfig) *FaultClient {
	c := &FaultClient{inner: inner, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x746f6f6c67617465))}
	if c.cfg.MaxLatency <= 0 {
		c.cfg.MaxLatency = time.Millisecond
	}
	c.enabled.Store(true)
	return c
}

// Inner returns the wrapped client.
func (c *FaultClient) Inner() store.DbClient { return c.inner }

// SetEnabled turns the random faults (before, after, latency) on or off.
// Outages are independent of it.
func (c *FaultClient) SetEnabled(on bool) { c.enabled.Store(on) }

// StartOutage takes the database down: every call fails with FaultOutage,
// applying nothing, until EndOutage.
func (c *FaultClient) StartOutage() { c.down.Store(true) }

// EndOutage brings the database back after StartOutage.
func (c *FaultClient) EndOutage() { c.down.Store(false) }

// Counts returns the calls seen and the faults injected so far.
func (c *FaultClient) Counts() FaultCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts
}

// plan is what happens to one call.
type plan struct {
	err   FaultKind // "", FaultBefore, FaultAfter or FaultOutage
	delay time.Duration
}

// decide draws the faults of one call whose statements are queries.
func (c *FaultClient) decide(queries []string) plan {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts.Calls++
	if c.down.Load() {
		c.counts.Outage++
		return plan{err: FaultOutage}
	}
	if !c.enabled.Load() || !c.matches(queries) {
		return plan{}
	}
	// Three draws per matching call, whatever they decide, so that one
	// call's outcome does not shift the draws of the next.
	uErr, uLat, uDelay := c.rng.Float64(), c.rng.Float64(), c.rng.Float64()
	var p plan
	switch {
	case uErr < c.cfg.BeforeRate:
		p.err = FaultBefore
	case uErr < c.cfg.BeforeRate+c.cfg.AfterRate:
		p.err = FaultAfter
	}
	if c.cfg.MaxErrors > 0 && c.counts.Before+c.counts.After >= c.cfg.MaxErrors {
		p.err = ""
	}
	switch p.err {
	case FaultBefore:
		c.counts.Before++
	case FaultAfter:
		c.counts.After++
	}
	if uLat < c.cfg.LatencyRate {
		p.delay = time.Duration(uDelay * float64(c.cfg.MaxLatency))
		c.counts.Latency++
	}
	return p
}

func (c *FaultClient) matches(queries []string) bool {
	if c.cfg.MatchFunc == nil {
		return true
	}
	for _, q := range queries {
		if c.cfg.MatchFunc(q) {
			return true
		}
	}
	return false
}

// run carries out p around call: the delay, then an error instead of the
// call, or the call and then an error if it succeeded (a call that failed
// by itself keeps its own error).
func (c *FaultClient) run(ctx context.Context, p plan, query string, call func() error) error {
	if p.delay > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := time.NewTimer(p.delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	if p.err == FaultBefore || p.err == FaultOutage {
		return &FaultError{Kind: p.err, Query: shorten(query)}
	}
	if err := call(); err != nil {
		return err
	}
	if p.err == FaultAfter {
		return &FaultError{Kind: FaultAfter, Query: shorten(query)}
	}
	return nil
}

// Exec implements store.DbClient. It returns the inner client's error, or
// a *FaultError when a fault was injected.
func (c *FaultClient) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := c.run(ctx, c.decide([]string{query}), query, func() (err error) {
		n, err = c.inner.Exec(ctx, query, args...)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Query implements store.DbClient. It returns the inner client's error, or
// a *FaultError when a fault was injected.
func (c *FaultClient) Query(ctx context.Context, query string, args ...any) ([][]any, error) {
	var rows [][]any
	err := c.run(ctx, c.decide([]string{query}), query, func() (err error) {
		rows, err = c.inner.Query(ctx, query, args...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// CanBatch reports whether the inner client can batch.
func (c *FaultClient) CanBatch() bool {
	_, ok := store.BatcherOf(c.inner)
	return ok
}

// Batch implements store.Batcher when the inner client can batch. The batch
// is one call, faulted as a whole: an error after commit loses the reply of
// an applied batch. Batch fails when the inner client cannot batch, and
// otherwise returns the inner client's error or a *FaultError.
func (c *FaultClient) Batch(ctx context.Context, stmts []store.Stmt) ([][][]any, error) {
	b, ok := store.BatcherOf(c.inner)
	if !ok {
		return nil, fmt.Errorf("storetest: batch: %T cannot batch", c.inner)
	}
	queries := make([]string, len(stmts))
	for i, st := range stmts {
		queries[i] = st.Query
	}
	first := ""
	if len(queries) > 0 {
		first = queries[0]
	}
	var out [][][]any
	err := c.run(ctx, c.decide(queries), first, func() (err error) {
		out, err = b.Batch(ctx, stmts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// shorten keeps error messages readable: the statement's first 60 bytes,
// white space collapsed.
func shorten(q string) string {
	q = strings.Join(strings.Fields(q), " ")
	if len(q) > 60 {
		q = q[:60] + "..."
	}
	return q
}
