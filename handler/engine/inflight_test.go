package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// TestPeeksOfOneKeyShareOneRead: waiters that poll a key while a read of it
// is in progress get that read's outcome, and nobody else reads; the read
// outlives its initiator's cancellation; a waiter who gives up stops
// waiting; a poll after the read reads again.
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

		_, err := fs.peek(context.Background(), "k", func(context.Context) (store.Record, error) {
			reads.Add(1)
			return store.Record{}, errors.New("down")
		})
		require.EqualError(t, err, "down")
		require.EqualValues(t, 2, reads.Load(), "a later poll reads again")
		require.Empty(t, fs.peeks)
	})
}
