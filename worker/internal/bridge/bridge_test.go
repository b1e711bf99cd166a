//go:build !js

package bridge_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/benchharness"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// These tests run the testworker (worker/internal/bridge/testworker: bridge.Serve over test routes)
// inside workerd through toolgate's shim, in both of the shim's modes.

var (
	buildDir string // the testworker with the shim, built once by TestMain
	buildErr error
	// client bounds every request: a request the shim loses (e.g. its I/O cancelled with another
	// request's context) fails the test instead of hanging it.
	client = &http.Client{Timeout: 20 * time.Second}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bridge-testworker-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir, buildErr = dir, benchharness.BuildGo(dir, "./worker/internal/bridge/testworker")
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func setup(t *testing.T, mode string) *edgetest.Edge {
	t.Helper()
	require.NoError(t, buildErr)
	return edgetest.Start(t, edgetest.Options{
		BuildDir:      buildDir,
		Mode:          mode,
		MigrationsDir: "store/sqlstore/migrations",
		Vars:          map[string]string{"TOOLGATE_RUNTIME_STATS": "on"},
	})
}

type runtimeStats struct {
	Mode       string `json:"mode"`
	Boots      int    `json:"boots"`
	Instance   int    `json:"instance"`
	Served     int    `json:"served"`
	HeapAlloc  int64  `json:"heapAlloc"`
	JSValues   int    `json:"jsValuesHeldByGo"`
	WasmMemory int64  `json:"wasmMemoryBytes"`
	Routines   int    `json:"goroutines"`
}

func stats(t *testing.T, base string) runtimeStats {
	t.Helper()
	status, body := do(t, http.MethodGet, base+"/_toolgate/runtime?gc=1")
	require.Equal(t, http.StatusOK, status, body)
	var s runtimeStats
	require.NoError(t, json.Unmarshal([]byte(body), &s))
	return s
}

func do(t *testing.T, method, u string) (int, string) {
	t.Helper()
	status, body, err := try(method, u)
	require.NoError(t, err)
	return status, body
}

// try is do without t, for goroutines.
func try(method, u string) (int, string, error) {
	req, err := http.NewRequest(method, u, strings.NewReader(`{"n":1}`))
	if err != nil {
		return 0, "", err
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// parallel runs fn(i) for i in [0, n) on n goroutines and returns the statuses.
func parallel(t *testing.T, n int, fn func(i int) (int, string, error)) []int {
	t.Helper()
	statuses := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var body string
			statuses[i], body, errs[i] = fn(i)
			if errs[i] == nil && statuses[i] == 0 {
				errs[i] = fmt.Errorf("no status: %s", body)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	return statuses
}

func countStatus(statuses []int, want int) int {
	n := 0
	for _, s := range statuses {
		if s == want {
			n++
		}
	}
	return n
}

// jobsDone returns how many of ids are in the jobs table, waiting up to 10 s for all of them (jobs run
// after their responses).
func jobsDone(t *testing.T, db *sql.DB, ids []string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, id := range ids {
			var x int
			if db.QueryRow(`SELECT 1 FROM jobs WHERE id = ?`, id).Scan(&x) == nil {
				n++
			}
		}
		if n == len(ids) || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBridgePersistent(t *testing.T) {
	t.Parallel()
	edge := setup(t, edgetest.ModePersistent)
	base := edge.URL("w0")
	status, body := do(t, http.MethodPost, base+"/seed?caller=c1&amount=1000000")
	require.Equal(t, http.StatusOK, status, body)

	t.Run("one instance serves every request, concurrently", func(t *testing.T) {
		before := stats(t, base)
		statuses := parallel(t, 24, func(i int) (int, string, error) {
			if i%2 == 0 {
				return try(http.MethodGet, base+"/slow?ms=200")
			}
			return try(http.MethodPost, fmt.Sprintf("%s/paid?caller=c1&key=conc-%d", base, i))
		})
		require.Equal(t, 24, countStatus(statuses, http.StatusOK))
		after := stats(t, base)
		require.Equal(t, before.Instance, after.Instance)
		require.Equal(t, 1, after.Boots)
		require.Equal(t, before.Served+24, after.Served)
	})

	t.Run("waitUntil jobs finish while other requests come and go", func(t *testing.T) {
		// Each job sleeps past its own response and past many other requests' lifetimes: the Go timer
		// and the D1 write of a job may be started from any of those requests' contexts.
		var ids []string
		statuses := parallel(t, 40, func(i int) (int, string, error) {
			switch i % 4 {
			case 0:
				return try(http.MethodPost, fmt.Sprintf("%s/job?id=job-%d&ms=%d", base, i, 100+10*i))
			case 1:
				return try(http.MethodGet, base+"/healthz")
			case 2:
				return try(http.MethodPost, fmt.Sprintf("%s/paid?caller=c1&key=wu-%d", base, i))
			}
			return try(http.MethodGet, fmt.Sprintf("%s/slow?ms=%d", base, 5*i))
		})
		for i := 0; i < 40; i += 4 {
			ids = append(ids, fmt.Sprintf("job-%d", i))
			require.Equal(t, http.StatusAccepted, statuses[i])
		}
		require.Equal(t, 40, countStatus(statuses, http.StatusOK)+countStatus(statuses, http.StatusAccepted))
		require.Equal(t, len(ids), jobsDone(t, edge.OpenD1(t), ids))
	})

	t.Run("a panic fails only its own request", func(t *testing.T) {
		before := stats(t, base)
		statuses := parallel(t, 30, func(i int) (int, string, error) {
			if i%3 == 0 {
				return try(http.MethodGet, base+"/panic")
			}
			return try(http.MethodGet, base+"/slow?ms=100")
		})
		require.Equal(t, 10, countStatus(statuses, http.StatusInternalServerError))
		require.Equal(t, 20, countStatus(statuses, http.StatusOK))
		require.Equal(t, before.Instance, stats(t, base).Instance)
	})

	t.Run("the heap stays bounded over many requests", func(t *testing.T) {
		call := func(n, from int) {
			statuses := parallel(t, 8, func(w int) (int, string, error) {
				for i := w; i < n; i += 8 {
					if s, b, err := try(http.MethodPost, fmt.Sprintf("%s/paid?caller=c1&key=heap-%d", base, from+i)); err != nil || s != http.StatusOK {
						return s, b, err
					}
				}
				return http.StatusOK, "", nil
			})
			require.Equal(t, 8, countStatus(statuses, http.StatusOK))
		}
		call(200, 0) // warm
		warm := stats(t, base)
		call(800, 200)
		hot := stats(t, base)
		require.Equal(t, warm.Instance, hot.Instance)
		t.Logf("after 200 calls: heap %d B, %d JS values held by Go, %d goroutines; after 1000: heap %d B, %d JS values, %d goroutines",
			warm.HeapAlloc, warm.JSValues, warm.Routines, hot.HeapAlloc, hot.JSValues, hot.Routines)
		require.Less(t, hot.HeapAlloc, warm.HeapAlloc+512<<10, "Go heap (after GC) grew by more than the allowance over 800 calls")
		require.LessOrEqual(t, hot.Routines, warm.Routines+2, "goroutines leak")
	})

	t.Run("scheduled events use the same instance", func(t *testing.T) {
		before := stats(t, base)
		require.NoError(t, edge.Scheduled(context.Background(), "w0", "*/5 * * * *"))
		require.Equal(t, 1, jobsDone(t, edge.OpenD1(t), []string{"cron:*/5 * * * *"}))
		require.Equal(t, before.Instance, stats(t, base).Instance)
	})

	t.Run("fetch is aborted when its context ends", func(t *testing.T) {
		testFetchAborted(t, base)
	})

	t.Run("bytes cross whole, through the inbox or as JS values", func(t *testing.T) {
		testBytes(t, base)
	})

	t.Run("a dead instance is replaced by the next request", func(t *testing.T) {
		before := stats(t, base)
		res, body := get(t, base+"/crash")
		requireRuntimeRestarted(t, res, body)
		status, b := do(t, http.MethodPost, base+"/paid?caller=c1&key=after-crash")
		require.Equal(t, http.StatusOK, status, b)
		after := stats(t, base)
		require.Equal(t, before.Boots+1, after.Boots)
		require.NotEqual(t, before.Instance, after.Instance)
	})

	t.Run("a dying runtime answers every request in flight 503", func(t *testing.T) {
		const inFlight = 3
		before := stats(t, base)
		mark := edge.LogMark()
		type answer struct {
			res  *http.Response
			body string
			err  error
		}
		answers := make(chan answer, inFlight)
		for range inFlight {
			go func() {
				res, body, err := tryGet(base + "/slow?ms=5000")
				answers <- answer{res, body, err}
			}()
		}
		// All of them are in Go (dispatched) before the runtime dies.
		for deadline := time.Now().Add(10 * time.Second); stats(t, base).Served < before.Served+inFlight; {
			require.True(t, time.Now().Before(deadline), "the slow requests never reached Go")
			time.Sleep(20 * time.Millisecond)
		}

		res, body := get(t, base+"/overflow")
		requireRuntimeRestarted(t, res, body)
		for range inFlight {
			a := <-answers
			require.NoError(t, a.err)
			requireRuntimeRestarted(t, a.res, a.body)
		}

		status, b := do(t, http.MethodPost, base+"/paid?caller=c1&key=after-overflow")
		require.Equal(t, http.StatusOK, status, b)
		after := stats(t, base)
		require.Equal(t, before.Boots+1, after.Boots)
		require.NotEqual(t, before.Instance, after.Instance)

		// One structured line for the death, naming the instance and the cause.
		var deaths []map[string]any
		for _, line := range strings.Split(edge.LogsSince(mark), "\n") {
			if i := strings.Index(line, `{"level":"error","msg":"toolgate: Go runtime stopped"`); i >= 0 {
				var d map[string]any
				require.NoError(t, json.Unmarshal([]byte(line[i:]), &d), line)
				deaths = append(deaths, d)
			}
		}
		require.Len(t, deaths, 1, edge.LogsSince(mark))
		require.Equal(t, float64(before.Instance), deaths[0]["instance"])
		require.Contains(t, deaths[0]["cause"], "Maximum call stack size exceeded")
		require.Equal(t, float64(inFlight+1), deaths[0]["inFlight"])
	})
}

// requireRuntimeRestarted checks the shim's answer to a request abandoned by a dying runtime.
func requireRuntimeRestarted(t *testing.T, res *http.Response, body string) {
	t.Helper()
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode, body)
	require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
	require.Equal(t, "12", res.Header.Get("Retry-After"), "the testworker's SetCrashRetryAfter")
	var p struct {
		Type       string `json:"type"`
		Title      string `json:"title"`
		Status     int    `json:"status"`
		Detail     string `json:"detail"`
		Retryable  bool   `json:"retryable"`
		RetryAfter int    `json:"retryAfter"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &p), body)
	require.Equal(t, "https://toolgate.dev/problems/runtime-restarted", p.Type)
	require.NotEmpty(t, p.Title)
	require.Equal(t, http.StatusServiceUnavailable, p.Status)
	require.Contains(t, p.Detail, "same Idempotency-Key is safe to retry")
	require.True(t, p.Retryable)
	require.Equal(t, 12, p.RetryAfter)
}

// testFetchAborted checks that bridge.Fetch closes the upstream's connection when its context ends: at
// its deadline (the shim's timer) and when it is cancelled (Go resolves the abort).
func testFetchAborted(t *testing.T, base string) {
	up := edgetest.NewHangingUpstream(t)
	for i, end := range []string{"deadline", "cancel"} {
		res, body := get(t, fmt.Sprintf("%s/fetch?url=%s&%s=500", base, url.QueryEscape(up.URL+"/hang"), end))
		answered := time.Now()
		require.Equal(t, http.StatusGatewayTimeout, res.StatusCode, body)
		var out struct {
			Deadline bool `json:"deadline"`
			Canceled bool `json:"canceled"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &out), body)
		require.Equal(t, end == "deadline", out.Deadline, body)
		require.Equal(t, end == "cancel", out.Canceled, body)
		gap := up.WaitClosed(t, 45*time.Second).Sub(answered)
		t.Logf("%s: upstream connection closed %s after the answer", end, gap.Round(time.Millisecond))
		require.Less(t, gap, 3*time.Second, "%s: the fetch must be aborted", end)
		require.Equal(t, i+1, up.Calls())
	}
}

// testBytes sends texts and request bodies below and above the bridge's 64 KiB inbox (they cross it as
// bytes, or as JS values) through every path that uses it: the request, D1 rows (Query and Batch), a
// fetch response, D1 error messages; and checks that each comes back whole. It sends them again after
// a request that grew the wasm memory: the shim's views of the inbox and outbox must follow it.
func testBytes(t *testing.T, base string) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body) // all of it first: net/http's server is not full duplex
		_, _ = w.Write(b)
	}))
	t.Cleanup(echo.Close)
	send := func(n, size int) {
		t.Helper()
		body := strings.Repeat("ä", size/2) + strings.Repeat("b", size%2)
		res, err := client.Post(fmt.Sprintf("%s/bytes?n=%d&url=%s", base, n, url.QueryEscape(echo.URL)), "text/plain", strings.NewReader(body))
		require.NoError(t, err)
		b, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.StatusCode, "n=%d body=%d: %.300s", n, size, b)
		line, text, ok := bytes.Cut(b, []byte("\n"))
		require.True(t, ok, "n=%d body=%d: %.300s", n, size, b)
		var out struct {
			Body                               string
			Query, Batch, Fetch                bool
			QueryError, BatchError, FetchError string
			Error                              string
		}
		require.NoError(t, json.Unmarshal(line, &out), "n=%d body=%d: %.300s", n, size, line)
		errs := fmt.Sprintf("n=%d body=%d: %.200s | %.200s | %.200s", n, size, out.QueryError, out.BatchError, out.FetchError)
		sum := sha256.Sum256([]byte(body))
		require.Equal(t, fmt.Sprintf("%d %x", len(body), sum), out.Body, "%s: the request", errs)
		require.True(t, out.Query, errs)
		require.True(t, out.Batch, errs)
		require.True(t, out.Fetch, errs)
		require.Len(t, text, n, "%s: the response", errs)
		require.True(t, utf8.Valid(text), errs)
		require.Contains(t, out.Error, `nö_tåble_`+string(text[:min(len(text), 20)]), errs)
	}
	cases := []struct{ n, body int }{{0, 0}, {1, 1}, {300, 64 << 10}, {64<<10 - 300, 10}, {64 << 10, 64<<10 + 1}, {90_000, 200_000}}
	for _, c := range cases {
		send(c.n, c.body)
	}
	before := stats(t, base).WasmMemory
	send(300, 16<<20)
	require.Greater(t, stats(t, base).WasmMemory, before, "a 16 MB request grows the memory")
	for _, c := range cases {
		send(c.n, c.body)
	}
}

// get is a GET with no body that returns the whole response.
func get(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	res, body, err := tryGet(u)
	require.NoError(t, err)
	return res, body
}

func tryGet(u string) (*http.Response, string, error) {
	res, err := client.Get(u)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, string(b), err
}

func TestBridgePerRequest(t *testing.T) {
	t.Parallel()
	edge := setup(t, edgetest.ModePerRequest)
	base := edge.URL("w0")
	status, body := do(t, http.MethodPost, base+"/seed?caller=c1&amount=1000")
	require.Equal(t, http.StatusOK, status, body)

	before := stats(t, base)
	require.Equal(t, "per-request", before.Mode)
	statuses := parallel(t, 12, func(i int) (int, string, error) {
		switch i % 3 {
		case 0:
			return try(http.MethodPost, fmt.Sprintf("%s/job?id=pr-job-%d&ms=150", base, i))
		case 1:
			return try(http.MethodPost, fmt.Sprintf("%s/paid?caller=c1&key=pr-%d", base, i))
		}
		return try(http.MethodGet, base+"/panic")
	})
	require.Equal(t, 4, countStatus(statuses, http.StatusAccepted))
	require.Equal(t, 4, countStatus(statuses, http.StatusOK))
	require.Equal(t, 4, countStatus(statuses, http.StatusInternalServerError))
	// Every event booted its own instance: 12 requests + this stats request.
	require.Equal(t, before.Boots+13, stats(t, base).Boots)
	require.Equal(t, 4, jobsDone(t, edge.OpenD1(t), []string{"pr-job-0", "pr-job-3", "pr-job-6", "pr-job-9"}))
	res, b := get(t, base+"/overflow")
	requireRuntimeRestarted(t, res, b)
	testFetchAborted(t, base)
	require.NoError(t, edge.Scheduled(context.Background(), "w0", "0 * * * *"))
	require.Equal(t, 1, jobsDone(t, edge.OpenD1(t), []string{"cron:0 * * * *"}))
}
