package storetest

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// leaseCases: claims, leases, fencing, takeovers, replays and TTLs.
var leaseCases = []Case{
	{"ClaimCompleteReplay", func(t TB, s store.Store, rt *store.CountingClient) {
		var a store.ClaimResult
		requireTrips(t, rt, 1, func() { a = mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed) }, "claim")
		require.Equal(t, int64(1), a.Record.Generation)
		require.Equal(t, store.StatusInProgress, a.Record.Status)
		body := binaryBody()
		requireTrips(t, rt, 1, func() {
			require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a),
				Response: store.Response{StatusCode: 201, ContentType: "application/octet-stream", Body: body}, Now: at(time.Second)}))
		}, "complete")
		var b store.ClaimResult
		requireTrips(t, rt, 1, func() { b = mustClaim(t, s, claim("k", "B", "fp", at(2*time.Second)), store.OutcomeCompleted) }, "replay")
		require.NotNil(t, b.Record.Response)
		require.True(t, bytes.Equal(body, b.Record.Response.Body), "replayed body must be byte-identical")
		require.Equal(t, 201, b.Record.Response.StatusCode)
		require.Equal(t, "application/octet-stream", b.Record.Response.ContentType)
		require.Equal(t, "A", b.Record.Owner)
		// A completed record can no longer be completed or failed by its owner.
		require.ErrorIs(t, s.Fail(ctx, fence(a), "late", at(3*time.Second)), store.ErrFencedOut)
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, store.StatusCompleted, got.Status)
	}},

	{"FailThenTakeover", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		require.NoError(t, s.Fail(ctx, fence(a), "upstream 500", at(time.Second)))
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, store.StatusFailed, got.Status)
		require.Equal(t, "upstream 500", got.Error)
		b := mustClaim(t, s, claim("k", "B", "fp", at(2*time.Second)), store.OutcomeClaimed)
		require.Equal(t, int64(2), b.Record.Generation)
		require.Equal(t, "B", b.Record.Owner)
		require.Empty(t, b.Record.Error)
	}},

	{"StaleOwnerFencedOut", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		b := mustClaim(t, s, claim("k", "B", "fp", at(lease+time.Second)), store.OutcomeClaimed)
		require.Equal(t, a.Record.Generation+1, b.Record.Generation)
		before, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		now := at(lease + 2*time.Second)
		require.ErrorIs(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("stale")}, Now: now}), store.ErrFencedOut)
		require.ErrorIs(t, s.Fail(ctx, fence(a), "stale", now), store.ErrFencedOut)
		require.ErrorIs(t, s.Heartbeat(ctx, fence(a), now.Add(time.Hour), now), store.ErrFencedOut)
		_, err = s.Charge(ctx, charge(fence(a), "alice", 100, now))
		require.ErrorIs(t, err, store.ErrFencedOut)
		_, _, err = s.Refund(ctx, fence(a), now)
		require.ErrorIs(t, err, store.ErrFencedOut)
		after, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, before, after, "the winner's record is unchanged")
		requireBalance(t, s, "alice", 1000)
	}},

	{"HeartbeatKeepsLease", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		for i := 1; i <= 4; i++ {
			now := at(time.Duration(i) * 8 * time.Second) // every 8 s, lease 10 s
			requireTrips(t, rt, 1, func() { require.NoError(t, s.Heartbeat(ctx, fence(a), now.Add(lease), now)) }, "heartbeat")
			requireTrips(t, rt, 1, func() {
				mustClaim(t, s, claim("k", "B", "fp", now.Add(5*time.Second)), store.OutcomeInProgress)
			}, "claim in progress")
		}
		// 32 s in, three times the original lease: still A's, still generation 1.
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: at(40 * time.Second)}))
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, int64(1), got.Generation)
		require.Equal(t, store.StatusCompleted, got.Status)
	}},

	{"LeaseExpiryTakeover", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		in := mustClaim(t, s, claim("k", "B", "fp", at(lease-time.Millisecond)), store.OutcomeInProgress)
		require.Equal(t, "A", in.Record.Owner)
		require.Equal(t, at(lease), in.Record.LeaseExpiresAt)
		b := mustClaim(t, s, claim("k", "B", "fp", at(lease)), store.OutcomeClaimed)
		require.Equal(t, a.Record.Generation+1, b.Record.Generation)
		require.Equal(t, at(2*lease), b.Record.LeaseExpiresAt)
	}},

	{"TTLExpiryStartsFresh", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		a := mustClaim(t, s, claim("k", "A", "fp1", t0), store.OutcomeClaimed)
		_, err := s.Charge(ctx, charge(fence(a), "alice", 100, t0))
		require.NoError(t, err)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("old")}, Now: at(time.Second)}))
		mustClaim(t, s, claim("k", "B", "fp1", at(ttl-time.Millisecond)), store.OutcomeCompleted)
		// After the TTL, even a different request starts a new execution.
		b := mustClaim(t, s, claim("k", "B", "fp2", at(ttl)), store.OutcomeClaimed)
		require.Equal(t, int64(2), b.Record.Generation)
		require.Equal(t, "fp2", b.Record.Fingerprint)
		require.Nil(t, b.Record.Response)
		require.Equal(t, store.ChargeNone, b.Record.Charge.State)
		require.Equal(t, at(ttl+ttl), b.Record.ExpiresAt)
		// The new incarnation is charged on its own.
		res, err := s.Charge(ctx, charge(fence(b), "alice", 100, at(ttl)))
		require.NoError(t, err)
		require.True(t, res.Charged)
		require.Equal(t, int64(800), res.Balance)
	}},

	{"FingerprintMismatchUntouched", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp1", t0), store.OutcomeClaimed)
		before, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		var mErr error
		requireTrips(t, rt, 1, func() { _, mErr = s.Claim(ctx, claim("k", "B", "fp2", at(time.Second))) }, "mismatched claim")
		require.ErrorIs(t, mErr, store.ErrFingerprintMismatch)
		// Even the lease-expired case must not be taken over by a different request.
		_, err = s.Claim(ctx, claim("k", "B", "fp2", at(lease+time.Second)))
		require.ErrorIs(t, err, store.ErrFingerprintMismatch)
		after, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, before, after)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("x")}, Now: at(lease + 2*time.Second)}))
		_, err = s.Claim(ctx, claim("k", "B", "fp2", at(lease+3*time.Second)))
		require.ErrorIs(t, err, store.ErrFingerprintMismatch)
	}},

	{"RetriedClaimSameOwner", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		// The reply was lost; A asks again and must learn it holds the claim.
		again := mustClaim(t, s, claim("k", "A", "fp", at(time.Second)), store.OutcomeClaimed)
		require.Equal(t, a.Record.Generation, again.Record.Generation)
		require.Equal(t, at(time.Second+lease), again.Record.LeaseExpiresAt)
		mustClaim(t, s, claim("k", "B", "fp", at(2*time.Second)), store.OutcomeInProgress)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("x")}, Now: at(3 * time.Second)}))
	}},

	{"ClaimRace50", func(t TB, s store.Store, rt *store.CountingClient) {
		const n = 50
		outcomes := make([]store.Outcome, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				res, err := s.Claim(ctx, claim("race", fmt.Sprintf("owner-%d", i), "fp", t0))
				outcomes[i], errs[i] = res.Outcome, err
			}(i)
		}
		wg.Wait()
		claimed := 0
		for i := range outcomes {
			require.NoError(t, errs[i])
			if outcomes[i] == store.OutcomeClaimed {
				claimed++
			} else {
				require.Equal(t, store.OutcomeInProgress.String(), outcomes[i].String())
			}
		}
		require.Equal(t, 1, claimed)
	}},

	{"CompleteKeepsAnswerForTTL", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		require.NoError(t, s.Heartbeat(ctx, fence(a), at(ttl+time.Minute), at(50*time.Minute)))
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("late")}, Now: at(ttl + 30*time.Second), TTL: ttl}))
		r := mustClaim(t, s, claim("k", "B", "fp", at(ttl+time.Minute)), store.OutcomeCompleted)
		require.Equal(t, "late", string(r.Record.Response.Body))
		require.Equal(t, at(2*ttl+30*time.Second), r.Record.ExpiresAt)
	}},

	{"BadInputStoresNothing", func(t TB, s store.Store, rt *store.CountingClient) {
		for name, key := range map[string]string{
			"empty": "", "long": strings.Repeat("k", store.MaxKeyLen+1), "newline": "a\nb", "nul": "a\x00b", "del": "a\x7fb",
		} {
			_, err := s.Claim(ctx, claim(key, "A", "fp", t0))
			require.ErrorIs(t, err, store.ErrInvalidKey, name)
			_, err = s.Peek(ctx, key)
			require.ErrorIs(t, err, store.ErrNotFound, name)
		}
		mustClaim(t, s, claim(strings.Repeat("k", store.MaxKeyLen), "A", "fp", t0), store.OutcomeClaimed)
		_, err := s.Claim(ctx, store.ClaimParams{Key: "k", Owner: "A", Fingerprint: "fp", Now: t0})
		require.ErrorIs(t, err, store.ErrInvalidArgument, "zero lease")
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		big := make([]byte, store.DefaultMaxResponseBytes+1)
		err = s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: big}, Now: t0})
		require.ErrorIs(t, err, store.ErrTooLarge)
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, store.StatusInProgress, got.Status)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: big[:store.DefaultMaxResponseBytes]}, Now: t0}))
	}},
}
