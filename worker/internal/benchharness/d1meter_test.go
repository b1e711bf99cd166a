//go:build !js

package benchharness

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// TestMeterD1 runs the JS reference behind the D1 meter in workerd and checks that the meter counts
// every D1 call and statement the reference makes (seed, first paid call, replay), that a batch counts
// once as a call and once per statement, and that the round-trip delay can be set.
func TestMeterD1(t *testing.T) {
	t.Parallel()
	ref, metered := t.TempDir(), t.TempDir()
	require.NoError(t, BuildReference(ref))
	require.NoError(t, MeterD1(ref, metered))
	var upstreamCalls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	tools := `{"tools":[{"name":"t","price":"0.01","currency":"USD","upstream":{"url":"` + up.URL + `"}}]}`
	edge := edgetest.Start(t, edgetest.Options{BuildDir: metered, MigrationsDir: "store/sqlstore/migrations",
		Vars: map[string]string{"TOOLS": tools, "BENCH_D1_RTT_MS": "3"}})
	base := edge.URL("w0")
	post := func(path string, hdr map[string]string) (int, http.Header) {
		req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(`{"q":1}`))
		require.NoError(t, err)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := Client.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		_, _ = io.ReadAll(res.Body)
		return res.StatusCode, res.Header
	}

	zero, err := D1(base)
	require.NoError(t, err)
	require.Equal(t, D1Stats{RTTMs: 3}, zero, "the var sets the delay; nothing reached D1 yet")

	status, _ := post("/_seed?caller=c1&key=k1&amount=1000", nil)
	require.Equal(t, http.StatusCreated, status)
	seeded, err := D1(base)
	require.NoError(t, err)
	require.Equal(t, D1Stats{RTTMs: 3, Calls: 2, Statements: 2}, seeded, "create the caller, credit it")

	call := map[string]string{"Authorization": "Bearer k1", "Idempotency-Key": "m-1", "Content-Type": "application/json"}
	status, _ = post("/v1/tools/t/call", call)
	require.Equal(t, http.StatusOK, status)
	paid, err := D1(base)
	require.NoError(t, err)
	// The key lookup, the claim-and-charge batch (2 statements), the complete-and-count batch (2 statements).
	require.Equal(t, D1Stats{RTTMs: 3, Calls: 3, Statements: 5, Batches: 2}, paid.Sub(seeded))

	status, hdr := post("/v1/tools/t/call", call)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "true", hdr.Get("Idempotent-Replayed"))
	replayed, err := D1(base)
	require.NoError(t, err)
	// The caller is cached: the claim-and-charge batch finds the key completed.
	require.Equal(t, D1Stats{RTTMs: 3, Calls: 1, Statements: 2, Batches: 1}, replayed.Sub(paid))
	require.Equal(t, int64(1), upstreamCalls.Load())

	require.NoError(t, SetD1RTT(20, base))
	now, err := D1(base)
	require.NoError(t, err)
	require.Equal(t, 20.0, now.RTTMs)
	require.Error(t, SetD1RTT(-1, base), "a negative delay is refused")
}
