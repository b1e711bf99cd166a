//go:build !js

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// TestE2ERuntimeCrash kills the worker's Go runtime (the crashtest build's
// /_test/crash overflows V8's stack) while a paid call is in flight on the
// same isolate. Both requests get 503 runtime-restarted with a Retry-After of
// the catalog's longest lease; retrying the paid call with the same key after
// that completes it on a new runtime, charged once.
func TestE2ERuntimeCrash(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		calls   int
		started = make(chan struct{}, 1)
		closed  = make(chan struct{}, 1)
	)
	// The first call hangs until its connection is closed; later ones answer.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			started <- struct{}{}
			<-r.Context().Done()
			closed <- struct{}{}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"input":%s}`, body)
	}))
	t.Cleanup(up.Close)
	tools := fmt.Sprintf(`{"tools":[
		{"name":"work","description":"d","price":"0.05","currency":"USD","upstream":{"url":"%s/work"},"lease":"2s","timeout":"20s"},
		{"name":"quick","description":"d","price":"0.05","currency":"USD","upstream":{"url":"%s/quick"},"lease":"1s"}]}`, up.URL, up.URL)
	edge := edgetest.Start(t, edgetest.Options{
		BuildDir:      edgetest.BuildVariant(t, "crashtest"),
		Mode:          edgetest.ModePersistent,
		MigrationsDir: "store/sqlstore/migrations",
		Vars:          map[string]string{"TOOLS": tools, "ADMIN_TOKEN": e2eAdminToken},
	})
	base := edge.URL("w0")
	db := edge.OpenD1(t)
	kim := newCaller(t, base, "kim", "1.00")

	type answer struct {
		res  *http.Response
		body []byte
		err  error
	}
	inFlight := make(chan answer, 1)
	go func() {
		res, body, err := client{base: base, key: kim.key}.try(http.MethodPost, "/v1/tools/work/call",
			[]byte(`{"q":1}`), map[string]string{"Idempotency-Key": "k-1"})
		inFlight <- answer{res, body, err}
	}()
	receive(t, started) // charged, and waiting for the upstream

	res, body := client{t: t, base: base}.do(http.MethodPost, "/_test/crash", nil, nil)
	requireRuntimeRestarted(t, res, body, 2)
	a := receive(t, inFlight)
	require.NoError(t, a.err)
	requireRuntimeRestarted(t, a.res, a.body, 2)
	receive(t, closed) // the dying runtime aborted the upstream call too

	// As the answer says: after Retry-After, the same key completes the call.
	time.Sleep(2 * time.Second)
	res, body = kim.call("work", "k-1", `{"q":1}`)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	mu.Lock()
	require.Equal(t, 2, calls, "the call cut short runs again")
	mu.Unlock()
	charges, refunds := countCharges(t, db, "kim")
	require.Equal(t, [2]int{1, 0}, [2]int{charges, refunds}, "charged once across the crash")
	require.Equal(t, int64(95), checkLedger(t, db, "kim"))
}

// receive returns the next value from ch, or fails t after 30 s.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatal("nothing received in 30 s")
		var zero T
		return zero
	}
}

// requireRuntimeRestarted checks the shim's answer to a request that was in
// flight when the runtime died.
func requireRuntimeRestarted(t *testing.T, res *http.Response, body []byte, retryAfter int) {
	t.Helper()
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode, string(body))
	require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
	require.Equal(t, strconv.Itoa(retryAfter), res.Header.Get("Retry-After"), "the longest tool lease")
	var p struct {
		Type       string `json:"type"`
		Status     int    `json:"status"`
		Retryable  bool   `json:"retryable"`
		RetryAfter int    `json:"retryAfter"`
	}
	require.NoError(t, json.Unmarshal(body, &p), string(body))
	require.Equal(t, "https://toolgate.dev/problems/runtime-restarted", p.Type)
	require.Equal(t, http.StatusServiceUnavailable, p.Status)
	require.True(t, p.Retryable)
	require.Equal(t, retryAfter, p.RetryAfter)
}
