//go:build !js

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// TestE2EUpstreamAbortedAtTimeout checks, in workerd, that a tool's timeout cuts the upstream off: the
// caller gets 504 (refunded) and the upstream's connection is closed right then, not when the Workers
// runtime gives up on the event about 30 s later, so the upstream cannot finish work the caller was told
// was refunded. Both of the shim's Go runtime modes run, each as its own isolate.
func TestE2EUpstreamAbortedAtTimeout(t *testing.T) {
	t.Parallel()
	up := edgetest.NewHangingUpstream(t)
	tools := fmt.Sprintf(`{"tools":[{"name":"hang","description":"never answers","price":"0.05","currency":"USD",
		"upstream":{"url":"%s/hang"},"timeout":"1s"}]}`, up.URL)
	modes := []string{edgetest.ModePersistent, edgetest.ModePerRequest}
	edge := edgetest.Start(t, edgetest.Options{
		Workers:       modes,
		MigrationsDir: "store/sqlstore/migrations",
		Vars:          map[string]string{"TOOLS": tools, "ADMIN_TOKEN": e2eAdminToken},
		WorkerVars: map[string]map[string]string{
			edgetest.ModePersistent: {"GO_RUNTIME": edgetest.ModePersistent},
			edgetest.ModePerRequest: {"GO_RUNTIME": edgetest.ModePerRequest},
		},
	})
	db := edge.OpenD1(t)
	// One at a time: each mode's close must be told apart.
	for i, mode := range modes {
		caller := fmt.Sprintf("hang-%d", i)
		c := newCaller(t, edge.URL(mode), caller, "1.00")
		res, body := c.call("hang", "h-1", `{"q":1}`)
		answered := time.Now()
		require.Equal(t, http.StatusGatewayTimeout, res.StatusCode, "%s: %s", mode, body)
		require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
		var p struct {
			Type      string `json:"type"`
			Refunded  bool   `json:"refunded"`
			Retryable bool   `json:"retryable"`
		}
		require.NoError(t, json.Unmarshal(body, &p))
		require.Equal(t, "https://toolgate.dev/problems/upstream-timeout", p.Type)
		require.True(t, p.Refunded && p.Retryable, string(body))

		// Before the upstream was aborted this gap was about 30 s (the event's keep-alive cap).
		gap := up.WaitClosed(t, 45*time.Second).Sub(answered)
		t.Logf("%s: upstream connection closed %s after the 504", mode, gap.Round(time.Millisecond))
		require.Less(t, gap, 3*time.Second, "%s: the upstream must be cut off at the tool timeout", mode)

		require.Equal(t, i+1, up.Calls(), "one upstream call per mode")
		charges, refunds := countCharges(t, db, caller)
		require.Equal(t, [2]int{1, 1}, [2]int{charges, refunds})
		require.Equal(t, int64(100), checkLedger(t, db, caller))
	}
}

// TestNativeUpstreamAbortedAtTimeout is the native twin: the same app over
// net/http (engine.HTTPUpstream) closes the upstream connection at the
// tool's timeout too.
func TestNativeUpstreamAbortedAtTimeout(t *testing.T) {
	t.Parallel()
	up := edgetest.NewHangingUpstream(t)
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "toolgate.db"))
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, sqlstore.Migrate(ctx, db))
	st := sqlstore.New(db)
	require.NoError(t, seedDemo(ctx, st))
	tools := fmt.Sprintf(`{"tools":[{"name":"hang","description":"never answers","price":"0.05","currency":"USD",
		"upstream":{"url":"%s/hang"},"timeout":"1s"}]}`, up.URL)
	s, err := SettingsFrom(func(k string) string { return map[string]string{"TOOLS": tools}[k] })
	require.NoError(t, err)
	h, err := newApp(st, &engine.HTTPUpstream{}, s, nil)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	res, body := call(t, srv.URL, "hang", "n-1", `{"q":1}`)
	answered := time.Now()
	require.Equal(t, http.StatusGatewayTimeout, res.StatusCode, body)
	gap := up.WaitClosed(t, 45*time.Second).Sub(answered)
	t.Logf("native: upstream connection closed %s after the 504", gap.Round(time.Millisecond))
	require.Less(t, gap, 3*time.Second)
	require.Equal(t, 1, up.Calls())
	require.NoError(t, st.CheckInvariants(ctx))
	bal, err := st.Balance(ctx, demoCallerID, "USD")
	require.NoError(t, err)
	require.Equal(t, int64(1000), bal, "refunded")
}
