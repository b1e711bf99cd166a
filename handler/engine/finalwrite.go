package engine

import (
	"context"
	"errors"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// Final writes.
//
// Complete, Refund and Fail end a claimed call, once the upstream has
// answered. All three are fenced by (owner, generation), so running one again
// changes nothing the first run did not: a second Complete or Fail finds the
// record no longer in progress (store.ErrFencedOut), a second Refund finds no
// charge left to return. That makes them safe to retry after a transient
// database error: any error that is not one of the store's sentinels (see
// storeError), such as a refused connection, a timeout, or D1's "Network
// connection lost", which may come after the write committed.
//
// The invariant: a call whose upstream has answered is not executed again
// because its final writes met a database outage shorter than the retry
// budget, half the tool's lease. The final writes of one call share that
// budget: they retry from finalRetryInitial, doubling up to finalRetryMax,
// and start no new try once the time slept reaches half the lease, or the
// time spent since the upstream answered reaches the whole lease (slow
// tries). The lease was renewed at most Lease/3 before the upstream
// answered (when the heartbeats got through), so within half a lease
// nobody can take the key over while we retry. A try after the lease ran
// out is still safe: it is fenced, so it succeeds only if nobody took the
// key over, and a retry fenced out by a new owner answers as for a lost
// lease.
//
// After an unknown outcome (a transient error), a retry reads whether the
// lost write was done by us, and then answers as if its reply had arrived:
//
//   - Complete: fenced out, and one Peek shows the record completed at our
//     (owner, generation) with the very response we stored;
//   - Fail: fenced out, and one Peek shows the record failed at our
//     (owner, generation), or already at a later generation (a new request
//     took the failed key over before our retry read it), or gone;
//   - Refund: the retry returns refunded=false while we still hold the record
//     in progress (the store checks that), and the key held a charge when we
//     first asked: only a refund under our fence can have returned it (Sweep
//     refunds only failed records, and a record we still hold in progress
//     is not failed), so it was ours, and the balance the retry read is the
//     balance after it.
//
// When the budget runs out, the last error stands: 503 with Retry-After for
// a Complete, or the upstream failure with refunded=false when the refund did
// not get through. The key stays in progress with its charge, and the next
// attempt takes it over after the lease and inherits the charge, so the net
// charge stays one price (the upstream then runs a second time, with the same
// Idempotency-Key).
const (
	finalRetryInitial = 25 * time.Millisecond
	finalRetryMax     = 500 * time.Millisecond
)

// finalBudget is the retry budget shared by the final writes of one call.
type finalBudget struct {
	start time.Time // wall clock (monotonic), not the injected one
	lease time.Duration
	slept time.Duration
	next  time.Duration
}

// finalBudget starts the retry budget of a call's final writes.
func (a *attempt) finalBudget() *finalBudget {
	return &finalBudget{start: time.Now(), lease: a.tool.Lease, next: finalRetryInitial}
}

// wait sleeps before the next try and reports whether one may start.
func (b *finalBudget) wait(ctx context.Context) bool {
	left := min(b.lease/2-b.slept, b.lease-time.Since(b.start))
	if left <= 0 {
		return false
	}
	d := min(b.next, left)
	if sleep(ctx, d) != nil {
		return false
	}
	b.slept += d
	b.next = min(2*b.next, finalRetryMax)
	return true
}

// transient reports whether err is a database failure worth retrying (or
// polling through): not one of the store's answers.
func transient(err error) bool {
	return err != nil && !store.IsAnswer(err)
}

// retryFinal runs write until it succeeds, fails for good, or b runs out,
// and returns its last error through storeError(op, ...). write learns
// whether an earlier try ended in a transient error (its outcome unknown).
// When a retry is fenced out and doneByMe is not nil, doneByMe reads whether
// the write was applied by us after all (retried while b lasts); if so, the
// write succeeded.
func (a *attempt) retryFinal(ctx context.Context, b *finalBudget, op string,
	write func(retry bool) error, doneByMe func() (bool, error)) error {
	retry := false
	for {
		err := write(retry)
		if err == nil {
			return nil
		}
		if retry && doneByMe != nil && errors.Is(err, store.ErrFencedOut) {
			for {
				done, rerr := doneByMe()
				if rerr == nil && done {
					return nil
				}
				if rerr == nil || !transient(rerr) || !b.wait(ctx) {
					return storeError(op, err)
				}
			}
		}
		if !transient(err) || !b.wait(ctx) {
			return storeError(op, err)
		}
		retry = true
	}
}

// complete stores resp for the key (see retryFinal).
func (a *attempt) complete(ctx context.Context, f store.Fence, b *finalBudget, resp store.Response, usage *store.Usage, capture *int64) error {
	e := a.e
	return a.completeWith(ctx, f, b, resp, func() error {
		return e.store.Complete(ctx, store.CompleteParams{Fence: f, Now: e.now(), TTL: a.tool.TTL, Response: resp, Usage: usage,
			Capture: capture})
	})
}

// completeWith retries write, a Complete of resp under f (plain, or with a
// payment's outcome), and recognises a lost reply by reading the record
// back.
func (a *attempt) completeWith(ctx context.Context, f store.Fence, b *finalBudget, resp store.Response, write func() error) error {
	return a.retryFinal(ctx, b, "complete key", func(bool) error { return write() }, func() (bool, error) {
		rec, err := a.e.store.Peek(ctx, f.Key)
		if err != nil {
			return false, err
		}
		return rec.Status == store.StatusCompleted && rec.Owner == f.Owner && rec.Generation == f.Generation &&
			rec.Response != nil && rec.Response.StatusCode == resp.StatusCode &&
			rec.Response.ContentType == resp.ContentType && string(rec.Response.Body) == string(resp.Body), nil
	})
}

// refund returns the key's charge, which the caller knows it holds (see
// retryFinal).
func (a *attempt) refund(ctx context.Context, f store.Fence, b *finalBudget) (refunded bool, balance int64, err error) {
	e := a.e
	err = a.retryFinal(ctx, b, "refund key", func(retry bool) error {
		var err error
		refunded, balance, err = e.store.Refund(ctx, f, e.now())
		if err == nil && retry && !refunded {
			// Still ours and in progress, but no longer charged: the
			// refund whose reply was lost returned it.
			refunded = true
		}
		return err
	}, nil)
	return refunded, balance, err
}

// fail marks the key failed (see retryFinal).
func (a *attempt) fail(ctx context.Context, f store.Fence, b *finalBudget, reason string) error {
	e := a.e
	return a.failWith(ctx, f, b, func() error { return e.store.Fail(ctx, f, reason, e.now()) })
}

// failWith retries write, a Fail under f (plain, or with a payment's new
// state), and recognises a lost reply by reading the record back.
func (a *attempt) failWith(ctx context.Context, f store.Fence, b *finalBudget, write func() error) error {
	return a.retryFinal(ctx, b, "fail key", func(bool) error { return write() }, func() (bool, error) {
		rec, err := a.e.store.Peek(ctx, f.Key)
		if errors.Is(err, store.ErrNotFound) {
			return true, nil // swept: nothing left to fail
		}
		if err != nil {
			return false, err
		}
		// Failed by us (the lost reply), or moved on to a later generation:
		// a new request took the key over after our Fail, or after our
		// lease ran out. Either way it is not ours to fail any more, and
		// what we answer (refunded or not, retryable) stays true.
		return rec.Generation > f.Generation ||
			rec.Status == store.StatusFailed && rec.Owner == f.Owner && rec.Generation == f.Generation, nil
	})
}
