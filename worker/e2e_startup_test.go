//go:build !js

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// bootSeed is a valid TOOLGATE_BOOT_SEED for tests (32 bytes of hex).
const bootSeed = "5f1c0e6a9b2d47c3881e0f5a6b7c8d9e0a1b2c3d4e5f60718293a4b5c6d7e8f9"

// TestE2EStartup: what the shim does at start-up, by the vars that ask for
// it, and that a worker then serves paid calls exactly as without it (one
// charge and one upstream run per key, a replay, duplicates that wait on a
// slow call and replay it: Go's timers work after a boot at start-up).
//   - TOOLGATE_STARTUP_REHEARSAL = "on": a request rehearsed on a throwaway
//     Go instance, which is no boot of the worker.
//   - TOOLGATE_BOOT_SEED: the worker's Go runtime and app booted at start-up
//     (one boot, before any event), drawing its random data from the seed;
//     an invalid seed is refused with a warning, and the first event boots.
//   - neither: nothing at start-up but the instantiation.
//
// All report it in the runtime statistics.
func TestE2EStartup(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	workers := []struct {
		name      string
		vars      map[string]string
		rehearsal string
		boot      string // the outcome, or a part of the warning
	}{
		{"rehearsal", map[string]string{"TOOLGATE_STARTUP_REHEARSAL": "on"}, "ok", "off"},
		{"off", nil, "off", "off"},
		{"seed", map[string]string{"TOOLGATE_BOOT_SEED": bootSeed}, "off", "ok"},
		// A seed with a rehearsal: the rehearsal is moot once booted.
		{"seedrehearsal", map[string]string{"TOOLGATE_BOOT_SEED": strings.ToUpper(bootSeed), "TOOLGATE_STARTUP_REHEARSAL": "on"}, "off", "ok"},
		{"shortseed", map[string]string{"TOOLGATE_BOOT_SEED": bootSeed[:62]}, "off", "it needs at least 32"},
		{"badseed", map[string]string{"TOOLGATE_BOOT_SEED": "not-hex-" + bootSeed}, "off", "not an even number of hex digits"},
	}
	names := make([]string, len(workers))
	workerVars := map[string]map[string]string{}
	for i, w := range workers {
		names[i] = w.name
		workerVars[w.name] = w.vars
	}
	edge := edgetest.Start(t, edgetest.Options{
		Mode:          edgetest.ModePersistent,
		Workers:       names,
		MigrationsDir: "store/sqlstore/migrations",
		Vars:          map[string]string{"TOOLS": up.tools(), "ADMIN_TOKEN": e2eAdminToken, "TOOLGATE_RUNTIME_STATS": "on"},
		WorkerVars:    workerVars,
	})
	db := edge.OpenD1(t)
	for i, w := range workers {
		base := edge.URL(w.name)
		stats := func() (s struct {
			Boots   int  `json:"boots"`
			Started bool `json:"started"` // the app was built at start-up (bridge.OnStart)
			Startup struct {
				Rehearsal     string `json:"rehearsal"`
				Boot          string `json:"boot"`
				BootMs        int    `json:"bootMs"`
				SeedBytes     int    `json:"seedBytes"`
				InstantiateMs int    `json:"instantiateMs"`
			} `json:"startup"`
		}) {
			res, body := client{t: t, base: base}.do(http.MethodGet, "/_toolgate/runtime", nil, nil)
			require.Equal(t, http.StatusOK, res.StatusCode, string(body))
			require.NoError(t, json.Unmarshal(body, &s))
			return s
		}
		before := stats()
		if w.boot == "ok" {
			require.Equal(t, 1, before.Boots, "%s: booted at start-up, before any event", w.name)
			require.Equal(t, 32, before.Startup.SeedBytes, "%s: the runtime's seed came from the boot seed, and nothing else did", w.name)
			require.Equal(t, -1, before.Startup.InstantiateMs, "%s: no spare instance", w.name)
			require.True(t, before.Started, "%s: the app was built at start-up", w.name)
		} else {
			require.Contains(t, []int{0, 1}, before.Boots, w.name) // the stats route itself may boot
			require.Equal(t, 0, before.Startup.SeedBytes, w.name)
			require.False(t, before.Started, w.name)
			require.GreaterOrEqual(t, before.Startup.InstantiateMs, 0, w.name)
		}

		caller := fmt.Sprintf("c%d", i)
		alice := newCaller(t, base, caller, "1.00")
		for range 2 {
			res, body := alice.call("echo", "k", `{"q":1}`)
			require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		}
		// Duplicates of a slow call wait for it (Go's timers and the in-flight
		// execution's wake-up) and replay it.
		var wg sync.WaitGroup
		statuses := make([]int, 4)
		for j := range statuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, _, err := client{base: base, key: alice.key}.try(http.MethodPost, "/v1/tools/slow/call", []byte(`{}`), map[string]string{"Idempotency-Key": "s"})
				if err == nil {
					statuses[j] = res.StatusCode
				}
			}()
		}
		wg.Wait()
		require.Equal(t, []int{200, 200, 200, 200}, statuses, w.name)
		require.Equal(t, i+1, up.count("/echo"), "%s: one upstream run per worker", w.name)
		require.Equal(t, i+1, up.count("/slow"), "%s: one slow run per worker", w.name)
		charges, refunds := countCharges(t, db, caller)
		require.Equal(t, []int{2, 0}, []int{charges, refunds}, w.name)
		require.Equal(t, int64(90), checkLedger(t, db, caller), w.name)

		after := stats()
		t.Logf("%s: start-up %+v, boots %d", w.name, after.Startup, after.Boots)
		require.Equal(t, w.rehearsal, after.Startup.Rehearsal, w.name)
		require.Contains(t, after.Startup.Boot, w.boot, w.name)
		require.Equal(t, 1, after.Boots, "%s: one boot of the worker's runtime, whatever ran at start-up", w.name)
		if w.boot != "off" {
			require.GreaterOrEqual(t, after.Startup.BootMs, 0, w.name)
		}
	}
}
