//go:build !js

package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
	"github.com/toolgate/toolgate-go/worker/internal/faultcheck"
)

// TestE2ED1Faults runs three isolates on one D1 whose binding loses connections (worker/js/faults):
// a storm of duplicate calls and a burst of distinct keys under faults get only answers the caller can
// act on (200, or 503/409 with Retry-After, never a 500). With faults off and the lease past, a retry of
// every key completes, and the D1 file shows one net charge per key, Σ entries = balance, and no record
// left in progress. Extra upstream executions (a takeover after a lost write) are reported and bounded
// by the number of faults and upstream failures.
func TestE2ED1Faults(t *testing.T) {
	t.Parallel()
	up := faultcheck.NewUpstream()
	t.Cleanup(up.Close)
	faults := edgetest.Faults{Seed: 7, BeforeRate: 0.08, AfterRate: 0.08, LatencyMs: 5}
	edge := edgetest.Start(t, edgetest.Options{
		Workers:       []string{"w0", "w1", "w2"},
		MigrationsDir: "store/sqlstore/migrations",
		Vars:          map[string]string{"TOOLS": up.Tools("2s", "3s"), "ADMIN_TOKEN": e2eAdminToken},
		Faults:        &edgetest.Faults{Disabled: true}, // on once the caller exists
	})
	bases := []string{edge.URL("w0"), edge.URL("w1"), edge.URL("w2")}
	ctx := context.Background()
	db := edge.OpenD1(t)

	const credit = 10000 // 100.00 USD in cents
	zoe := newCaller(t, bases[0], "zoe", "100.00")
	require.NoError(t, edge.SetFaults(ctx, true, faults))

	// 6 keys × 12 duplicates, and 36 distinct keys, all at once over the three isolates.
	type call struct{ key, base string }
	var calls []call
	var keys []string
	for k := 0; k < 6; k++ {
		key := fmt.Sprintf("dup-%d", k)
		keys = append(keys, key)
		for i := 0; i < 12; i++ {
			calls = append(calls, call{key, bases[(k+i)%3]})
		}
	}
	for k := 0; k < 36; k++ {
		key := fmt.Sprintf("one-%d", k)
		keys = append(keys, key)
		calls = append(calls, call{key, bases[k%3]})
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		outcomes = map[string]int{}
		broken   []error
	)
	for _, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, body, err := client{base: c.base, key: zoe.key}.try(http.MethodPost, "/v1/tools/echo/call",
				[]byte(fmt.Sprintf(`{"k":%q}`, c.key)), map[string]string{"Idempotency-Key": c.key})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				broken = append(broken, err)
				return
			}
			name, err := faultcheck.Outcome(res.StatusCode, res.Header, body)
			outcomes[name]++
			if err != nil {
				broken = append(broken, fmt.Errorf("%s: %w", c.key, err))
			}
		}()
	}
	wg.Wait()
	stats, err := edge.FaultStats(ctx)
	require.NoError(t, err)
	t.Logf("under faults: %d calls, outcomes %v; faults %+v", len(calls), outcomes, stats)
	require.Empty(t, broken, "every answer under faults is 200 or says to retry")
	require.Positive(t, stats.Before, "faults before D1 were injected")
	require.Positive(t, stats.After, "lost replies were injected")
	require.Less(t, outcomes["200"]+outcomes["200 replayed"], len(calls), "some calls felt the faults")

	// Faults off, past the lease (2 s): every key completes on retry.
	require.NoError(t, edge.SetFaults(ctx, false, edgetest.Faults{}))
	time.Sleep(2500 * time.Millisecond)
	for i, key := range keys {
		retryUntilOK(t, client{t: t, base: bases[i%3], key: zoe.key}, key)
	}

	money, err := faultcheck.CheckMoney(ctx, db, time.Now())
	require.NoError(t, err)
	require.Zero(t, money.DoubleCharges)
	require.Zero(t, money.Stranded)
	extra, multi := 0, 0
	for _, key := range keys {
		km := money.Keys[engine.ScopedKey("zoe", "echo", key)]
		require.Equal(t, faultcheck.KeyMoney{Status: "completed", Net: 1}, km, key)
		n := up.Executions("/echo", key)
		require.GreaterOrEqual(t, n, 1, key)
		if n > 1 {
			multi++
			extra += n - 1
		}
	}
	// A key runs again only after a takeover: a lost write, or an upstream failure (a timeout under load)
	// that was refunded, or whose refund was lost.
	upstreamFailures := 0
	for name, n := range outcomes {
		if strings.HasPrefix(name, "502") || strings.HasPrefix(name, "504") {
			upstreamFailures += n
		}
	}
	t.Logf("upstream: %d keys, %d executed more than once (%d extra executions) after %d faults and %d upstream failures",
		len(keys), multi, extra, stats.Before+stats.After, upstreamFailures)
	require.LessOrEqual(t, extra, stats.Before+stats.After+upstreamFailures, "an extra execution needs a lost write or a failed call")
	require.Equal(t, int64(credit-5*len(keys)), checkLedger(t, db, "zoe"))
	charges, refunds := countCharges(t, db, "zoe")
	require.Equal(t, len(keys), charges-refunds)
}

// retryUntilOK calls key until it answers 200, waiting as Retry-After says (at most 20 attempts).
func retryUntilOK(t *testing.T, c client, key string) {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		res, body := c.call("echo", key, fmt.Sprintf(`{"k":%q}`, key))
		if res.StatusCode == http.StatusOK {
			return
		}
		_, err := faultcheck.Outcome(res.StatusCode, res.Header, body)
		require.NoError(t, err, key)
		wait, _ := strconv.Atoi(res.Header.Get("Retry-After"))
		time.Sleep(time.Duration(min(max(wait, 1), 3)) * time.Second)
	}
	t.Fatalf("%s: no 200 after 20 attempts", key)
}
