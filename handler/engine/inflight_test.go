package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// TestPeeksOfOneKeyShareOneRead: waiters that poll a key while a read of it
// is in progress, or less than peekFresh after it succeeded, get that read's
// outcome, and nobody else reads; the read outlives its initiator's
// cancellation; a waiter who gives up stops waiting; a poll peekFresh after
// the read reads again, and a failed read is not shared afterwards.
func TestPeeksOfOneKeyShareOneRead(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var fs flights
		var reads atomic.Int32
		release := make(chan struct{})
		read := func(ctx context.Context) (store.Record, error) {
			reads.Add(1)
			<-release
			if err := ctx.Err(); err != nil {
				return store.Record{}, err
			}
			return store.Record{Key: "k", Status: store.StatusCompleted}, nil
		}
		initiator, cancelInitiator := context.WithCancel(context.Background())
		const n = 10
		var wg sync.WaitGroup
		got := make([]store.Record, n)
		errs := make([]error, n)
		wg.Go(func() { got[0], errs[0] = fs.peek(initiator, "k", time.Time{}, read) })
		synctest.Wait() // the read is in progress
		for i := 1; i < n; i++ {
			wg.Go(func() { got[i], errs[i] = fs.peek(context.Background(), "k", time.Time{}, read) })
		}
		gaveUp, giveUp := context.WithCancel(context.Background())
		var quitter error
		wg.Go(func() { _, quitter = fs.peek(gaveUp, "k", time.Time{}, read) })
		synctest.Wait() // everyone waits for it
		giveUp()
		cancelInitiator()
		synctest.Wait()
		require.ErrorIs(t, quitter, context.Canceled, "a waiter who gives up stops waiting")
		close(release)
		wg.Wait()
		require.EqualValues(t, 1, reads.Load(), "one read for all")
		for i := range n {
			require.NoError(t, errs[i], "waiter %d", i)
			require.Equal(t, "k", got[i].Key)
		}

		failing := func(context.Context) (store.Record, error) {
			reads.Add(1)
			return store.Record{}, errors.New("down")
		}
		time.Sleep(peekFresh - time.Millisecond)
		rec, err := fs.peek(context.Background(), "k", time.Time{}, failing)
		require.NoError(t, err)
		require.Equal(t, "k", rec.Key)
		require.EqualValues(t, 1, reads.Load(), "a poll right after the read shares it")

		time.Sleep(time.Millisecond)
		_, err = fs.peek(context.Background(), "k", time.Time{}, failing)
		require.EqualError(t, err, "down")
		require.EqualValues(t, 2, reads.Load(), "a poll peekFresh after the read reads again")
		_, err = fs.peek(context.Background(), "k", time.Time{}, failing)
		require.EqualError(t, err, "down")
		require.EqualValues(t, 3, reads.Load(), "a failed read is not shared afterwards")
		require.Empty(t, fs.peeks)

		// Reads of other keys go stale and are dropped.
		ok := func(context.Context) (store.Record, error) { return store.Record{Key: "x"}, nil }
		_, _ = fs.peek(context.Background(), "a", time.Time{}, ok)
		_, _ = fs.peek(context.Background(), "b", time.Time{}, ok)
		require.Len(t, fs.peeks, 2)
		time.Sleep(peekFresh)
		_, _ = fs.peek(context.Background(), "c", time.Time{}, ok)
		require.Len(t, fs.peeks, 1, "only the fresh read is kept")
	})
}

// TestPeekAfterAndPeekWaitBound: a waiter that asks for a read made after
// some instant (notBefore) never gets one sent earlier, whether it is in
// progress or fresh; and a waiter waits for another's read at most
// peekWaitMax, then reads on its own.
func TestPeekAfterAndPeekWaitBound(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var fs flights
		var reads atomic.Int32
		release := make(chan struct{})
		slow := func(context.Context) (store.Record, error) {
			reads.Add(1)
			<-release
			return store.Record{Key: "old"}, nil
		}
		fast := func(context.Context) (store.Record, error) {
			reads.Add(1)
			return store.Record{Key: "new"}, nil
		}
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = fs.peek(context.Background(), "k", time.Time{}, slow) })
		synctest.Wait() // a read sent at t0 is in progress
		time.Sleep(time.Millisecond)
		rec, err := fs.peek(context.Background(), "k", time.Now(), fast)
		require.NoError(t, err)
		require.Equal(t, "new", rec.Key, "not the read in progress, sent before notBefore")
		require.EqualValues(t, 2, reads.Load())
		rec, err = fs.peek(context.Background(), "k", time.Now().Add(-time.Millisecond), fast)
		require.NoError(t, err)
		require.Equal(t, "new", rec.Key, "the fresh read sent at notBefore is shared")
		require.EqualValues(t, 2, reads.Load())
		time.Sleep(time.Millisecond)
		rec, err = fs.peek(context.Background(), "k", time.Now(), fast)
		require.NoError(t, err)
		require.EqualValues(t, 3, reads.Load(), "a fresh read sent before notBefore is not shared")
		require.Equal(t, "new", rec.Key)

		time.Sleep(peekFresh)
		wg.Go(func() { _, _ = fs.peek(context.Background(), "s", time.Time{}, slow) }) // never returns until released
		synctest.Wait()
		start := time.Now()
		rec, err = fs.peek(context.Background(), "s", time.Time{}, fast)
		require.NoError(t, err)
		require.Equal(t, "new", rec.Key, "its own read")
		require.Equal(t, peekWaitMax, time.Since(start), "after waiting peekWaitMax for the other")
		n := reads.Load()
		rec, err = fs.peek(context.Background(), "s", time.Time{}, fast)
		require.NoError(t, err)
		require.Equal(t, "new", rec.Key)
		require.Equal(t, n, reads.Load(), "later polls share its read, not the stuck one")
		close(release)
		wg.Wait()
	})
}

// TestClaimJoinLimit: a request joins a claim of its key and input in
// progress, not one of other input, nor one older than the limit (stuck):
// then it leads a claim of its own, which the stuck one's end leaves alone.
func TestClaimJoinLimit(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var fs flights
		const limit = 100 * time.Millisecond
		stuck, leader := fs.claim("k", "fp", limit)
		require.True(t, leader)
		c, leader := fs.claim("k", "fp", limit)
		require.False(t, leader)
		require.Same(t, stuck, c)
		other, leader := fs.claim("k", "other input", limit)
		require.True(t, leader, "another input claims on its own")
		fs.claimed("k", other, true, store.Record{}, nil)

		stuck, _ = fs.claim("k", "fp", limit)
		time.Sleep(limit)
		fresh, leader := fs.claim("k", "fp", limit)
		require.True(t, leader, "a claim older than the limit is not joined")
		fs.claimed("k", stuck, false, store.Record{}, nil)
		c, leader = fs.claim("k", "fp", limit)
		require.False(t, leader)
		require.Same(t, fresh, c, "the stuck claim's end left the fresh one")
		fs.claimed("k", fresh, true, store.Record{Key: "k"}, nil)
		<-c.done
		require.True(t, c.ok)
		require.Empty(t, fs.claims)
	})
}
