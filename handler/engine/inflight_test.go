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
		wg.Go(func() { got[0], errs[0] = fs.peek(initiator, "k", read) })
		synctest.Wait() // the read is in progress
		for i := 1; i < n; i++ {
			wg.Go(func() { got[i], errs[i] = fs.peek(context.Background(), "k", read) })
		}
		gaveUp, giveUp := context.WithCancel(context.Background())
		var quitter error
		wg.Go(func() { _, quitter = fs.peek(gaveUp, "k", read) })
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
		rec, err := fs.peek(context.Background(), "k", failing)
		require.NoError(t, err)
		require.Equal(t, "k", rec.Key)
		require.EqualValues(t, 1, reads.Load(), "a poll right after the read shares it")

		time.Sleep(time.Millisecond)
		_, err = fs.peek(context.Background(), "k", failing)
		require.EqualError(t, err, "down")
		require.EqualValues(t, 2, reads.Load(), "a poll peekFresh after the read reads again")
		_, err = fs.peek(context.Background(), "k", failing)
		require.EqualError(t, err, "down")
		require.EqualValues(t, 3, reads.Load(), "a failed read is not shared afterwards")
		require.Empty(t, fs.peeks)

		// Reads of other keys go stale and are dropped.
		ok := func(context.Context) (store.Record, error) { return store.Record{Key: "x"}, nil }
		_, _ = fs.peek(context.Background(), "a", ok)
		_, _ = fs.peek(context.Background(), "b", ok)
		require.Len(t, fs.peeks, 2)
		time.Sleep(peekFresh)
		_, _ = fs.peek(context.Background(), "c", ok)
		require.Len(t, fs.peeks, 1, "only the fresh read is kept")
	})
}
