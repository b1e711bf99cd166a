package storetest

import (
	"fmt"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// sweepCases: the cron backstop: abandoned calls settled, expired records deleted.
var sweepCases = []Case{
	{"SweepBounded", func(t TB, s store.Store, rt *store.CountingClient) {
		for i := 0; i < 5; i++ {
			r := mustClaim(t, s, claim(fmt.Sprintf("old%d", i), "A", "fp", t0), store.OutcomeClaimed)
			require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(r), Response: store.Response{StatusCode: 200, Body: []byte("x")}, Now: t0}))
		}
		failed := mustClaim(t, s, claim("oldfailed", "A", "fp", t0), store.OutcomeClaimed)
		require.NoError(t, s.Fail(ctx, fence(failed), "x", t0))
		// A live record and an in-progress one whose lease outlives its TTL stay.
		mustClaim(t, s, claim("fresh", "A", "fp", at(30*time.Minute)), store.OutcomeClaimed)
		held := mustClaim(t, s, claim("held", "A", "fp", t0), store.OutcomeClaimed)
		require.NoError(t, s.Heartbeat(ctx, fence(held), at(2*ttl), at(ttl-time.Second)))
		now := at(ttl + time.Second)
		var got []int
		for {
			n, err := s.Sweep(ctx, now, 2)
			require.NoError(t, err)
			got = append(got, n)
			if n == 0 {
				break
			}
		}
		require.Equal(t, []int{2, 2, 2, 0}, got)
		for _, k := range []string{"fresh", "held"} {
			_, err := s.Peek(ctx, k)
			require.NoError(t, err, k)
		}
		_, err := s.Peek(ctx, "old0")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.Sweep(ctx, now, 0)
		require.ErrorIs(t, err, store.ErrInvalidArgument)
	}},

	{"SweepRefundsAbandonedCharge", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		// A charged and completed call keeps its charge when swept.
		done := mustClaim(t, s, claim("done", "A", "fp", t0), store.OutcomeClaimed)
		_, err := s.Charge(ctx, charge(fence(done), "alice", 100, t0))
		require.NoError(t, err)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(done), Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: t0}))
		// Two owners charged, then crashed; nobody retried within the TTL.
		for _, k := range []string{"lost1", "lost2"} {
			r := mustClaim(t, s, claim(k, "A", "fp", t0), store.OutcomeClaimed)
			_, err := s.Charge(ctx, charge(fence(r), "alice", 100, t0))
			require.NoError(t, err)
		}
		requireBalance(t, s, "alice", 700)
		n, err := s.Sweep(ctx, at(ttl+time.Second), 10)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		bal, err := s.Balance(ctx, "alice", "USD")
		require.NoError(t, err)
		require.Equal(t, int64(900), bal, "abandoned charges are refunded, the completed one is kept")
		for _, k := range []string{"lost1", "lost2"} {
			entries, err := s.Entries(ctx, store.EntryFilter{Key: k})
			require.NoError(t, err)
			require.Len(t, entries, 2, k)
			require.Equal(t, "refund", entries[1].Kind)
			_, err = s.Peek(ctx, k)
			require.ErrorIs(t, err, store.ErrNotFound)
		}
	}},

	{"SweepFailsAbandonedLeases", func(t TB, s store.Store, rt *store.CountingClient) {
		// Records in progress past their lease, long before their TTL: one
		// charged (its owner crashed), one already refunded (its owner lost
		// the Fail after the refund), and one whose lease is still live.
		credit(t, s, "alice", 1000)
		crashed := mustClaim(t, s, claim("crashed", "A", "fp", t0), store.OutcomeClaimed)
		_, err := s.Charge(ctx, charge(fence(crashed), "alice", 100, t0))
		require.NoError(t, err)
		refunded := mustClaim(t, s, claim("refunded", "A", "fp", t0), store.OutcomeClaimed)
		_, err = s.Charge(ctx, charge(fence(refunded), "alice", 100, t0))
		require.NoError(t, err)
		ok, _, err := s.Refund(ctx, fence(refunded), t0)
		require.NoError(t, err)
		require.True(t, ok)
		live := mustClaim(t, s, claim("live", "A", "fp", at(lease)), store.OutcomeClaimed)
		requireBalance(t, s, "alice", 900)

		n, err := s.Sweep(ctx, at(lease+time.Second), 10)
		require.NoError(t, err)
		require.Equal(t, 0, n, "nothing is past its TTL")
		requireBalance(t, s, "alice", 1000)
		requireKinds(t, s, "crashed", "charge", "refund")
		requireKinds(t, s, "refunded", "charge", "refund")
		for _, k := range []string{"crashed", "refunded"} {
			rec, err := s.Peek(ctx, k)
			require.NoError(t, err)
			require.Equal(t, store.StatusFailed, rec.Status, k)
			require.Equal(t, store.ChargeRefunded, rec.Charge.State, k)
		}
		rec, err := s.Peek(ctx, "live")
		require.NoError(t, err)
		require.Equal(t, store.StatusInProgress, rec.Status)

		// The stale owner is fenced out; a retry executes and pays again.
		err = s.Complete(ctx, store.CompleteParams{Fence: fence(crashed), Response: store.Response{StatusCode: 200, Body: []byte("late")}, Now: at(lease + 2*time.Second)})
		require.ErrorIs(t, err, store.ErrFencedOut)
		_, err = s.Charge(ctx, charge(fence(crashed), "alice", 100, at(lease+2*time.Second)))
		require.ErrorIs(t, err, store.ErrFencedOut)
		retry := mustClaimCharge(t, s, claimCharge("crashed", "B", "alice", 100, at(lease+3*time.Second)), store.OutcomeClaimed)
		require.True(t, retry.Charge.Charged)
		require.Equal(t, crashed.Record.Generation+1, retry.Record.Generation)
		requireBalance(t, s, "alice", 900)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(live), Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: at(lease + 3*time.Second)}))
	}},

	{"SweepFencesBeforeItRefunds", func(t TB, s store.Store, rt *store.CountingClient) {
		// More abandoned records than the sweep's limit: whatever a sweep
		// refunds, it has fenced out first, so no stale owner can complete a
		// call whose charge came back (the answer would be free).
		credit(t, s, "alice", 1000)
		mustClaim(t, s, claim("u0", "A", "fp", t0), store.OutcomeClaimed) // abandoned, never charged
		var owners []store.ClaimResult
		for _, k := range []string{"a1", "a2", "a3"} {
			r := mustClaim(t, s, claim(k, "A", "fp", t0), store.OutcomeClaimed)
			_, err := s.Charge(ctx, charge(fence(r), "alice", 100, t0))
			require.NoError(t, err)
			owners = append(owners, r)
		}
		for i := 0; i < 4; i++ {
			_, err := s.Sweep(ctx, at(lease+time.Duration(i+1)*time.Second), 1)
			require.NoError(t, err)
			for _, o := range owners {
				rec, err := s.Peek(ctx, o.Record.Key)
				require.NoError(t, err)
				if rec.Charge.State != store.ChargeRefunded {
					continue
				}
				require.Equal(t, store.StatusFailed, rec.Status, o.Record.Key)
				err = s.Complete(ctx, store.CompleteParams{Fence: fence(o), Response: store.Response{StatusCode: 200, Body: []byte("late")}, Now: at(lease + 5*time.Second)})
				require.ErrorIs(t, err, store.ErrFencedOut, o.Record.Key)
			}
		}
		requireBalance(t, s, "alice", 1000)
		require.NoError(t, s.CheckInvariants(ctx))
	}},
}
