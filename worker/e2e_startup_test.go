//go:build !js

package main

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// TestE2EStartupRehearsal: with TOOLGATE_STARTUP_REHEARSAL = "on" the
// shim rehearses a request at start-up on a throwaway Go instance, and the
// worker then serves paid calls exactly as without it (one charge, one
// upstream run, a replay); by default there is no rehearsal. Both report
// it in the runtime statistics.
func TestE2EStartupRehearsal(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	edge := edgetest.Start(t, edgetest.Options{
		Mode:          edgetest.ModePersistent,
		Workers:       []string{"on", "off"},
		MigrationsDir: "store/sqlstore/migrations",
		Vars:          map[string]string{"TOOLS": up.tools(), "ADMIN_TOKEN": e2eAdminToken, "TOOLGATE_RUNTIME_STATS": "on"},
		WorkerVars:    map[string]map[string]string{"on": {"TOOLGATE_STARTUP_REHEARSAL": "on"}},
	})
	db := edge.OpenD1(t)
	for i, w := range []string{"on", "off"} {
		base := edge.URL(w)
		alice := newCaller(t, base, []string{"alice", "bob"}[i], "1.00")
		for range 2 {
			res, body := alice.call("echo", "k", `{"q":1}`)
			require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		}
		require.Equal(t, i+1, up.count("/echo"), "one upstream run per worker")
		charges, refunds := countCharges(t, db, []string{"alice", "bob"}[i])
		require.Equal(t, []int{1, 0}, []int{charges, refunds})
		require.Equal(t, int64(95), checkLedger(t, db, []string{"alice", "bob"}[i]))

		res, body := client{t: t, base: base}.do(http.MethodGet, "/_toolgate/runtime", nil, nil)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		var stats struct {
			Boots   int `json:"boots"`
			Startup struct {
				Rehearsal     string `json:"rehearsal"`
				InstantiateMs int    `json:"instantiateMs"`
			} `json:"startup"`
		}
		require.NoError(t, json.Unmarshal(body, &stats))
		want := map[string]string{"on": "ok", "off": "off"}[w]
		require.Equal(t, want, stats.Startup.Rehearsal, string(body))
		require.GreaterOrEqual(t, stats.Startup.InstantiateMs, 0)
		require.Equal(t, 1, stats.Boots, "the rehearsal's instance is no boot of the worker")
	}
}
