//go:build !js

package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// TestE2ED1StalledHeartbeats is the D1 twin of the Turso stall test: calls
// that outlive their lease on one isolate, whose heartbeats are in flight
// when D1 stops answering; then the upstream answers (each call's heartbeat
// is cancelled mid-statement) and D1 comes back. No runtime may die of I/O
// crossing requests, every call answers 200 once, each key runs upstream
// once and is charged once.
func TestE2ED1StalledHeartbeats(t *testing.T) {
	t.Parallel()
	up := newGatedUpstream(t)
	edge := edgetest.Start(t, edgetest.Options{
		MigrationsDir: "store/sqlstore/migrations",
		Vars:          map[string]string{"TOOLS": up.tools(), "ADMIN_TOKEN": e2eAdminToken, "WAIT_FOR_IN_PROGRESS_MS": "60000"},
		Faults:        &edgetest.Faults{Disabled: true}, // only the pause
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w0 := edge.URL("w0")
	db := edge.OpenD1(t)
	ivy := newCaller(t, w0, "ivy", "10.00")
	mark := edge.LogMark()

	const keys = 12
	var wg sync.WaitGroup
	statuses := make(chan int, keys)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, _, err := client{base: w0, key: ivy.key}.try(http.MethodPost, "/v1/tools/stall/call", []byte(`{"gate":"d1"}`),
				map[string]string{"Idempotency-Key": fmt.Sprint("d1-stall-", i)})
			if err != nil {
				statuses <- 0
				return
			}
			statuses <- res.StatusCode
		}()
	}
	up.waitCalls(t, "/gate", keys)
	// Every call is inside its upstream call (lease 1 s, a heartbeat every
	// 333 ms). Stall D1 until each call's heartbeat is held there, then let
	// the upstream answer, then bring D1 back.
	require.NoError(t, edge.PauseD1(ctx, true))
	defer func() { _ = edge.PauseD1(context.Background(), false) }() // never leave D1 stalled
	require.Eventually(t, func() bool {
		st, err := edge.FaultStats(ctx)
		return err == nil && st.Held >= keys
	}, 30*time.Second, 20*time.Millisecond, "a heartbeat of every call held by the stalled D1")
	up.open("d1")
	up.waitCalls(t, "/gate"+answeredSuffix, keys)
	require.NoError(t, edge.PauseD1(ctx, false))
	wg.Wait()
	close(statuses)
	got := map[int]int{}
	for s := range statuses {
		got[s]++
	}
	require.Equal(t, map[int]int{http.StatusOK: keys}, got)
	require.Equal(t, keys, up.count("/gate"), "upstream calls: one per key")
	charges, refunds := countCharges(t, db, "ivy")
	require.Equal(t, [2]int{keys, 0}, [2]int{charges, refunds})
	require.Equal(t, int64(1000-5*keys), checkLedger(t, db, "ivy"))
	logs := edge.LogsSince(mark)
	for _, bad := range []string{"Go program exited", "different request", "panic:", "stopped"} {
		require.False(t, strings.Contains(logs, bad), "workerd log has %q", bad)
	}
}
