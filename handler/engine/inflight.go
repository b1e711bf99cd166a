package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// flights lets duplicates that reach the same engine (the same Workers
// isolate, or the same native process) share the execution in flight
// instead of polling the store for it.
//
// The invariant it keeps: a flight only ever shortens a wait; it never
// decides anything. The owner of a key publishes its result when execute
// returns; a waiter that sees a successful result replays exactly the bytes
// the owner stored (the owner publishes only after Complete succeeded, so the
// stored answer and the published one are the same). A waiter that sees a
// failed flight, or none, goes back to the store, where the claim decides as
// before. So a lost or wrong flight costs at most a poll, never a second
// execution or charge.
type flights struct {
	mu     sync.Mutex
	m      map[string]*flight   // by scoped key
	claims map[string]*claiming // claims in progress, by scoped key
	peeks  map[string]*peek     // the last read of each key polled here, by scoped key
}

// claiming is a claim of a key in progress on this engine. Requests for the
// same key and input that arrive meanwhile (a duplicate storm lands mostly
// on one isolate) wait for its outcome instead of claiming too: one round
// trip per isolate instead of one per duplicate. Joining decides nothing
// either: a joiner replays only a record the store returned completed, waits
// only for an execution that the claim gave to this engine, and otherwise
// claims on its own as before (see Engine.call).
type claiming struct {
	fingerprint string
	started     time.Time // when the claim started: older than the join limit, it is stuck
	done        chan struct{}
	// Set before done is closed. ok: the claim returned; rec: the record it
	// returned; exec: the execution's flight when the claim won the key.
	ok   bool
	rec  store.Record
	exec *flight
}

// peekFresh is how long after a successful read of a key the waiters that
// poll it share that read instead of reading again: their polls, spread by
// jitter over a few milliseconds, cost one round trip per isolate instead
// of one each, and leave the database to the owner's final write. An
// in-progress answer read that much earlier delays seeing the stored one by
// at most peekFresh; a completed one is final.
const peekFresh = 5 * time.Millisecond

// peekWaitMax bounds how long a waiter waits for a read of a key that
// another waiter started: then it reads on its own (a read whose reply
// never comes must not hold every waiter of the key).
const peekWaitMax = pollMax

// peek is one read of a key that every waiter polling it meanwhile, or
// within peekFresh after it returned, shares.
type peek struct {
	done   chan struct{}
	issued time.Time    // when the read was sent
	rec    store.Record // set before done is closed
	err    error
	at     time.Time // when the read returned; set before done is closed
}

// flight is one execution in progress on this engine.
type flight struct {
	fingerprint string
	done        chan struct{}
	res         CallResult // set before done is closed
	ok          bool       // res is the stored answer
}

// start registers the execution of key and returns its flight; the caller
// must call finish exactly once.
func (fs *flights) start(key, fingerprint string) *flight {
	f := &flight{fingerprint: fingerprint, done: make(chan struct{})}
	fs.mu.Lock()
	if fs.m == nil {
		fs.m = map[string]*flight{}
	}
	fs.m[key] = f
	fs.mu.Unlock()
	return f
}

// claim returns the claim of key in progress on this engine for the same
// request (fingerprint), if it started less than limit ago, and false; or
// registers the caller's claim and returns it, and true: the caller must
// then call claimed exactly once. A claim older than limit is stuck (its
// store call never returned): later requests claim on their own.
func (fs *flights) claim(key, fingerprint string, limit time.Duration) (c *claiming, leader bool) {
	now := time.Now()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if c := fs.claims[key]; c != nil && c.fingerprint == fingerprint && now.Sub(c.started) < limit {
		return c, false
	}
	c = &claiming{fingerprint: fingerprint, started: now, done: make(chan struct{})}
	if fs.claims == nil {
		fs.claims = map[string]*claiming{}
	}
	fs.claims[key] = c
	return c, true
}

// claimed publishes the outcome of the claim c of key to the requests that
// joined it.
func (fs *flights) claimed(key string, c *claiming, ok bool, rec store.Record, exec *flight) {
	fs.mu.Lock()
	if fs.claims[key] == c {
		delete(fs.claims, key)
	}
	fs.mu.Unlock()
	c.ok, c.rec, c.exec = ok, rec, exec
	close(c.done)
}

// finish publishes the result of key's execution and wakes its waiters.
func (fs *flights) finish(key string, f *flight, res CallResult, ok bool) {
	fs.mu.Lock()
	if fs.m[key] == f {
		delete(fs.m, key)
	}
	fs.mu.Unlock()
	f.res, f.ok = res, ok
	close(f.done)
}

// wait waits for key's local flight of the same request (fingerprint) up to
// limit, or, when there is none, sleeps d (a poll interval): with the owner
// here, there is nothing to poll for. It returns the flight's result when it
// succeeded; woke is true when the wait ended because a flight finished
// (successfully or not).
func (fs *flights) wait(ctx context.Context, key, fingerprint string, d, limit time.Duration) (res CallResult, ok, woke bool, err error) {
	fs.mu.Lock()
	f := fs.m[key]
	fs.mu.Unlock()
	if f == nil || f.fingerprint != fingerprint {
		return CallResult{}, false, false, sleep(ctx, d)
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return CallResult{}, false, false, ctx.Err()
	case <-t.C:
		return CallResult{}, false, false, nil
	case <-f.done:
		return f.res, f.ok, true, nil
	}
}

// peek reads key with read, or, when a read of key is in progress on this
// engine or succeeded less than peekFresh ago, returns that read's outcome:
// waiters on an isolate that poll a key at about the same moment (they all
// expect the answer then) cost one round trip instead of one each, and do
// not queue in front of the owner's final write. Sharing a read is safe: a
// poll decides nothing, and whoever acts on what it read (replay, claim)
// does so on its own as before; a shared read is only as old as a poll made
// that much earlier, and, when notBefore is set, was sent after it (a
// waiter that just saw a local execution fail wants a read made after
// that; on Workers the clock stands still between I/O, so a read sent in
// the same instant is not shared either). A failed read is shared only by
// those who waited for it. Nobody waits for another's read longer than
// peekWaitMax: then it reads on its own, and its read is the one later
// pollers share. The read runs without the caller's cancellation, so that a
// caller who gives up does not fail the others' read; a waiter who gives up
// stops waiting for it.
func (fs *flights) peek(ctx context.Context, key string, notBefore time.Time, read func(context.Context) (store.Record, error)) (store.Record, error) {
	fs.mu.Lock()
	if p := fs.peeks[key]; p != nil && (notBefore.IsZero() || p.issued.After(notBefore)) {
		switch {
		case p.at.IsZero(): // in progress
			fs.mu.Unlock()
			if rec, err, ok := p.wait(ctx); ok {
				return rec, err
			}
			fs.mu.Lock() // a stuck read: replaced by this one below
		case p.err == nil && time.Since(p.at) < peekFresh:
			fs.mu.Unlock()
			return p.rec, nil
		}
	}
	now := time.Now()
	for k, q := range fs.peeks { // the stale reads: there are as many as keys polled lately
		if !q.at.IsZero() && (q.err != nil || now.Sub(q.at) >= peekFresh) {
			delete(fs.peeks, k)
		}
	}
	p := &peek{done: make(chan struct{}), issued: now}
	if fs.peeks == nil {
		fs.peeks = map[string]*peek{}
	}
	fs.peeks[key] = p
	fs.mu.Unlock()
	rec, err := read(context.WithoutCancel(ctx))
	fs.mu.Lock()
	p.rec, p.err, p.at = rec, err, time.Now()
	if err != nil && fs.peeks[key] == p {
		delete(fs.peeks, key)
	}
	fs.mu.Unlock()
	close(p.done)
	return rec, err
}

// wait waits for the read p in progress, at most peekWaitMax: ok is false
// when it did not return by then (the caller reads on its own); err is
// ctx's when the caller gave up first.
func (p *peek) wait(ctx context.Context) (rec store.Record, err error, ok bool) {
	t := time.NewTimer(peekWaitMax)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return store.Record{}, ctx.Err(), true
	case <-p.done:
		return p.rec, p.err, true
	case <-t.C:
		return store.Record{}, nil, false
	}
}

// latencies remembers how long each tool's executions take (an exponential
// moving average), so that waiters on other isolates poll near the moment
// the answer is expected instead of on a blind backoff.
type latencies struct {
	m sync.Map // tool name -> *atomic.Int64 (nanoseconds)
}

// observe folds one execution's duration into tool's average (weight 1/4).
func (l *latencies) observe(tool string, d time.Duration) {
	v, _ := l.m.LoadOrStore(tool, &atomic.Int64{})
	avg := v.(*atomic.Int64)
	for {
		old := avg.Load()
		next := int64(d)
		if old > 0 {
			next = old + (int64(d)-old)/4
		}
		if avg.CompareAndSwap(old, next) {
			return
		}
	}
}

// expected returns tool's average execution time, or 0 if none was seen.
func (l *latencies) expected(tool string) time.Duration {
	v, ok := l.m.Load(tool)
	if !ok {
		return 0
	}
	return time.Duration(v.(*atomic.Int64).Load())
}
