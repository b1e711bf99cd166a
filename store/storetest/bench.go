package storetest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// Bench runs the store benchmarks (claim, replay, charge) on fresh stores
// from h, reporting round trips per operation where h counts them.
func Bench(b *testing.B, h Harness) {
	b.Run("Claim", func(b *testing.B) {
		s, rt := h.New(b)
		before := count(rt)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			_, err := s.Claim(ctx, claim(fmt.Sprintf("claim-%d", i), "A", "fp", t0))
			require.NoError(b, err)
		}
		report(b, rt, before)
	})
	b.Run("Replay", func(b *testing.B) {
		s, rt := h.New(b)
		r := mustClaim(b, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		require.NoError(b, s.Complete(ctx, store.CompleteParams{Fence: fence(r), Response: store.Response{StatusCode: 200, Body: make([]byte, 1024)}, Now: t0}))
		before := count(rt)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			mustClaim(b, s, claim("k", "B", "fp", t0), store.OutcomeCompleted)
		}
		report(b, rt, before)
	})
	b.Run("Charge", func(b *testing.B) {
		s, rt := h.New(b)
		_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: store.MaxAmount, Reference: "bench", Now: t0})
		require.NoError(b, err)
		fences := make([]store.Fence, b.N)
		for i := range fences {
			fences[i] = fence(mustClaim(b, s, claim(fmt.Sprintf("charge-%d", i), "A", "fp", t0), store.OutcomeClaimed))
		}
		before := count(rt)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			_, err := s.Charge(ctx, charge(fences[i], "alice", 1, t0))
			require.NoError(b, err)
		}
		report(b, rt, before)
	})
}

func count(rt *store.CountingClient) int64 {
	if rt == nil {
		return 0
	}
	return rt.Count()
}

func report(b *testing.B, rt *store.CountingClient, before int64) {
	if rt != nil {
		b.ReportMetric(float64(rt.Count()-before)/float64(b.N), "roundtrips/op")
	}
}
