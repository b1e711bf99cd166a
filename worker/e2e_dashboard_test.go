//go:build !js

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// runWorkerFirst reads wrangler.toml's [assets] run_worker_first, so the test serves the routes exactly
// as a deploy would.
func runWorkerFirst(t *testing.T) []string {
	t.Helper()
	toml, err := os.ReadFile(filepath.Join(edgetest.RepoRoot(t), "wrangler.toml"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^run_worker_first = (\[.*\])$`).FindSubmatch(toml)
	require.NotNil(t, m, "wrangler.toml has run_worker_first")
	var routes []string
	require.NoError(t, json.Unmarshal(m[1], &routes))
	return routes
}

// callLogs returns the worker's "call" log lines (one JSON object per call).
func callLogs(logs string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		i := strings.Index(line, `{"time"`)
		if i < 0 || !strings.Contains(line, `"msg":"call"`) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line[i:]), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// ledgerByTool sums the D1 file's ledger per tool of the entries' records: charged, refunded, net.
func ledgerByTool(t *testing.T, e *edgetest.Edge) map[string][3]int64 {
	t.Helper()
	db := e.OpenD1(t)
	rows, err := db.Query(`SELECT r.tool,
		coalesce(sum(CASE WHEN e.kind = 'charge' THEN -e.amount END), 0),
		coalesce(sum(CASE WHEN e.kind = 'refund' THEN e.amount END), 0)
		FROM ledger_entries e JOIN idem_records r ON r.key = e.idem_key GROUP BY r.tool`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string][3]int64{}
	for rows.Next() {
		var tool string
		var charged, refunded int64
		require.NoError(t, rows.Scan(&tool, &charged, &refunded))
		out[tool] = [3]int64{charged, refunded, charged - refunded}
	}
	require.NoError(t, rows.Err())
	return out
}

// TestE2EDashboard runs the compiled worker in workerd behind Workers static assets, as wrangler.toml
// configures it, with a D1 seeded by real calls (a storm, refunded failures, a rejection, replays, a
// mismatch, a 402). It checks the stats API against the ledger in the D1 file and the upstream's own
// counts, the D1 round trips per paid call and per replay, and then drives the dashboard in headless
// Chromium: log in, compare the page's numbers per tool with the ledger, open a call's trace, and see
// the error a wrong token gets. Screenshots (PNG) go to build/dashboard*.png.
func TestE2EDashboard(t *testing.T) {
	t.Parallel()
	edgetest.Build(t)
	chromium := chromiumPath(t)
	up := newUpstream(t)
	var rejected atomic.Int64
	rejecter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rejected.Add(1)
		http.Error(w, `{"error":"bad input"}`, http.StatusBadRequest)
	}))
	t.Cleanup(rejecter.Close)
	tools := strings.Replace(up.tools(), `{"tools":[`, `{"tools":[{"name":"reject","description":"e2e 400","price":"0.25","currency":"USD","upstream":{"url":"`+rejecter.URL+`/reject"}},{"name":"broken","description":"e2e 500","price":"0.10","currency":"USD","upstream":{"url":"http://127.0.0.1:1/x"}},`, 1)
	e := edgetest.Start(t, edgetest.Options{
		Vars:           map[string]string{"TOOLS": tools, "ADMIN_TOKEN": e2eAdminToken},
		MigrationsDir:  "store/sqlstore/migrations",
		AssetsDir:      "worker/dashboard/assets",
		RunWorkerFirst: runWorkerFirst(t),
	})
	base := e.EntryURL()
	alice := newCaller(t, base, "alice", "10.00")
	bob := newCaller(t, base, "bob", "1.00")
	poor := newCaller(t, base, "poor", "")

	// A storm of 12 on one key of a 1 s tool: one execution, the rest wait or replay.
	_, _ = storm(t, []string{base}, alice.key, "slow", "storm-1", `{"q":1}`, 12)
	for i := range 4 {
		res, body := bob.call("echo", fmt.Sprint("e", i), `{"i":1}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	}
	res, _ := bob.call("echo", "e0", `{"i":1}`) // a replay
	require.Equal(t, "true", res.Header.Get("Idempotent-Replayed"))
	res, _ = bob.call("echo", "e1", `{"i":2}`)
	require.Equal(t, http.StatusUnprocessableEntity, res.StatusCode)
	res, _ = alice.call("flaky", "fl", `{}`)
	require.Equal(t, http.StatusBadGateway, res.StatusCode, "the first flaky call fails and is refunded")
	res, _ = alice.call("flaky", "fl", `{}`)
	require.Equal(t, http.StatusOK, res.StatusCode, "the retry executes and is charged")
	for i := range 2 {
		res, _ = alice.call("broken", fmt.Sprint("b", i), `{}`)
		require.Equal(t, http.StatusBadGateway, res.StatusCode)
	}
	res, _ = alice.call("reject", "r", `{}`)
	require.Equal(t, http.StatusFailedDependency, res.StatusCode)
	res, _ = poor.call("echo", "p", `{}`)
	require.Equal(t, http.StatusPaymentRequired, res.StatusCode)

	// D1 round trips, as the worker's per-call log lines count them (caller cached by now).
	mark := e.LogMark()
	res, _ = bob.call("echo", "rt-paid", `{}`)
	require.Equal(t, http.StatusOK, res.StatusCode)
	res, _ = bob.call("echo", "rt-paid", `{}`)
	require.Equal(t, "true", res.Header.Get("Idempotent-Replayed"))
	// Log lines arrive asynchronously (an earlier call's may follow the mark): pick the key that has both.
	var paid, replay map[string]any
	require.Eventually(t, func() bool {
		byKey := map[string]map[string]map[string]any{}
		for _, l := range callLogs(e.LogsSince(mark)) {
			if l["caller"] == "bob" && l["tool"] == "echo" {
				k, _ := l["key"].(string)
				if byKey[k] == nil {
					byKey[k] = map[string]map[string]any{}
				}
				byKey[k][l["outcome"].(string)] = l
			}
		}
		for _, ls := range byKey {
			if ls["executed"] != nil && ls["replayed"] != nil {
				paid, replay = ls["executed"], ls["replayed"]
				return true
			}
		}
		return false
	}, 5*time.Second, 20*time.Millisecond)
	lookup := 0 // the caller is cached, except with a Go runtime per request ($TOOLGATE_GO_RUNTIME)
	if os.Getenv("TOOLGATE_GO_RUNTIME") == edgetest.ModePerRequest {
		lookup = 1
	}
	require.EqualValues(t, 2+lookup, paid["roundTrips"], "paid call: claim+charge batch, complete+counters batch")
	require.EqualValues(t, 1+lookup, replay["roundTrips"], "replay: the claim")
	t.Logf("D1 round trips: paid call %v, replay %v", paid["roundTrips"], replay["roundTrips"])

	// The stats API against the ledger and the upstream, once the background flush has run (5 s).
	admin := client{t: t, base: base, key: e2eAdminToken}
	type row struct {
		Tool                                                string
		Calls, Replays, Waits, Failures5xx, Failures4xx     int64
		PaymentRequired, Mismatches, Charged, Refunded, Net int64
	}
	var stats struct{ Tools []row }
	byTool := map[string]row{}
	require.Eventually(t, func() bool {
		res, body := admin.do(http.MethodGet, "/v1/admin/stats?bucket=hour", nil, nil)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		require.NoError(t, json.Unmarshal(body, &stats))
		for _, r := range stats.Tools {
			byTool[r.Tool] = r
		}
		return byTool["slow"].Waits+byTool["slow"].Replays == 11 && byTool["echo"].Replays == 2 &&
			byTool["broken"].Failures5xx == 2 && byTool["echo"].PaymentRequired == 1 && byTool["flaky"].Failures5xx == 1
	}, 15*time.Second, 100*time.Millisecond, "flushed counters: %+v", stats.Tools)
	ledger := ledgerByTool(t, e)
	d1 := sqlstore.New(store.NewSQLClient("d1file", e.OpenD1(t)))
	require.NoError(t, d1.CheckInvariants(context.Background()))
	require.NoError(t, d1.CheckUsage(context.Background()), "usage money = ledger, per hour, caller and currency")
	for _, tool := range []string{"slow", "echo", "flaky", "broken", "reject"} {
		got := byTool[tool]
		require.Equal(t, ledger[tool], [3]int64{got.Charged, got.Refunded, got.Net}, "tool %s: stats = ledger", tool)
	}
	require.EqualValues(t, up.count("/slow"), byTool["slow"].Calls)
	require.EqualValues(t, up.count("/echo"), byTool["echo"].Calls)
	require.EqualValues(t, up.count("/flaky"), byTool["flaky"].Calls+byTool["flaky"].Failures5xx)
	require.EqualValues(t, rejected.Load(), byTool["reject"].Failures4xx)
	require.EqualValues(t, rejected.Load(), byTool["reject"].Calls)
	require.EqualValues(t, 1, byTool["echo"].Mismatches)
	require.EqualValues(t, 5, ledger["slow"][2], "one charge for the storm")

	// The page is a static asset: the Go worker has no /dashboard route (it would answer 404
	// problem+json), so an HTML 200 comes from the assets, without a Go run. API routes reach the worker.
	res, page := client{t: t, base: base}.do(http.MethodGet, "/dashboard/", nil, nil)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, res.Header.Get("Content-Type"), "text/html")
	require.Contains(t, string(page), "publisher dashboard")
	res, _ = client{t: t, base: base}.do(http.MethodGet, "/v1/no-such-route", nil, nil)
	require.Equal(t, http.StatusNotFound, res.StatusCode)
	require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"), "the worker answers the API paths")

	// The browser.
	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Flag("headless", "new"), chromedp.WindowSize(1280, 1500))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	shots := filepath.Join(edgetest.RepoRoot(t), "build")
	do := func(a chromedp.Action[chromedp.Void]) {
		t.Helper()
		_, err := chromedp.Run(ctx, a)
		require.NoError(t, err)
	}
	shot := func() []byte {
		t.Helper()
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		return b
	}
	do(chromedp.Navigate(base + "/dashboard/"))
	do(chromedp.WaitVisible("#token"))
	do(chromedp.SendKeys("#token", e2eAdminToken))
	do(chromedp.Click("#login-button"))
	do(chromedp.WaitVisible(`#tools tr[data-tool="echo"]`))
	onPage, err := chromedp.Run(ctx, chromedp.Evaluate[map[string][]string](`Object.fromEntries([...document.querySelectorAll('#tools tr[data-tool]')].map(r =>
		[r.dataset.tool, [r.dataset.chargedMinor, r.dataset.refundedMinor, r.dataset.netMinor, r.querySelector('.net').textContent]]))`))
	require.NoError(t, err)
	for _, tool := range []string{"slow", "echo", "flaky", "broken", "reject"} {
		l := ledger[tool]
		require.Equal(t, []string{fmt.Sprint(l[0]), fmt.Sprint(l[1]), fmt.Sprint(l[2]), usd(l[2])}, onPage[tool], "page = ledger for %s", tool)
	}
	full := shot()
	// A small one for the README (docs/dashboard.png is a copy): the top of the page.
	do(chromedp.EmulateViewport(1000, 700))
	small, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	do(chromedp.EmulateViewport(1280, 1500))
	do(chromedp.Click(`#calls tr[data-index="0"]`))
	do(chromedp.WaitVisible("#trace"))
	events, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#trace tr.event')].map(r => r.dataset.type)`))
	require.NoError(t, err)
	require.NotEmpty(t, events)
	require.Equal(t, "created", events[0], "the trace starts with the claim: %v", events)
	trace := shot()
	do(chromedp.Click("#logout"))
	do(chromedp.WaitVisible("#token"))
	do(chromedp.SendKeys("#token", "not-the-token"))
	do(chromedp.Click("#login-button"))
	do(chromedp.WaitVisible("#error"))
	errText, err := chromedp.Run(ctx, chromedp.Text("#error"))
	require.NoError(t, err)
	require.Contains(t, errText, "refused (401)")
	failed := shot()
	for name, b := range map[string][]byte{"dashboard.png": full, "dashboard-small.png": small, "dashboard-trace.png": trace, "dashboard-error.png": failed} {
		p := filepath.Join(shots, name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		t.Logf("screenshot: %s", p)
		fmt.Fprintln(os.Stderr, "screenshot:", p)
	}
}

// usd formats minor units as the page does for USD.
func usd(minor int64) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	return fmt.Sprintf("%s%d.%02d USD", sign, minor/100, minor%100)
}

var (
	chromiumOnce sync.Once
	chromiumBin  string
)

// chromiumPath finds Debian's chromium (.ci/run installs it); the test fails, never skips, without it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	chromiumOnce.Do(func() {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
			if p, err := exec.LookPath(name); err == nil {
				chromiumBin = p
				return
			}
		}
	})
	if chromiumBin == "" {
		t.Fatal("no chromium on PATH: apt-get install -y chromium (.ci/run does)")
	}
	return chromiumBin
}
