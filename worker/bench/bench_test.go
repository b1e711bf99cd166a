//go:build !js

// Package bench is `make bench`: the Go worker (./worker) in both of the shim's modes and the plain-JS
// reference worker (worker/js/reference), side by side in one run on the same workerd, each in fresh
// Miniflare processes on loopback. It writes BENCHMARKS.md.
//
// Every phase is bounded in count and time. Settings (environment):
//
//	BENCH_RSS_CALLS   paid calls of the memory run (default 20000)
//	BENCH_ROUNDS      rounds of the paid c=8 phase, interleaved across targets (default 3; the median is reported)
//	BENCH_GOFLAGS     extra flags for building ./worker (e.g. -overlay=...)
//	BENCH_OUT         the report (default <repo>/BENCHMARKS.md; "-" writes none)
//	BENCH_NOTE        a paragraph for the report (e.g. what BENCH_GOFLAGS changes)
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/benchharness"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

const (
	adminToken = "bench-admin-token"
	callerID   = "bench"
	memC       = 8 // concurrency of the memory run
)

// target is one worker under test.
type target struct {
	name string
	dir  string // edgetest BuildDir
	mode string // the shim's GO_RUNTIME; "" for the JS reference
	js   bool
}

// phase is one measured load.
type phase struct {
	res     benchharness.Result
	cpuMs   float64 // workerd CPU per successful request, ms
	stmts   float64 // D1 statements per call (from the Go handler's log); 0 if unknown
	skipped string
}

// storm is the 50-way duplicate storm: time until all answered, over several storms.
type storm struct {
	times    []time.Duration
	statuses map[int]int
}

// memPoint is a checkpoint of the memory run.
type memPoint struct {
	calls     int
	rss       int64
	heap      int64 // Go heap in use after a GC (runtime.MemStats.HeapAlloc); -1 if not Go
	wasmMem   int64 // the Go instance's linear memory (WebAssembly.Memory byteLength)
	jsValues  int   // JS values the Go instance holds references to
	instances int   // Go instances booted so far
}

type report struct {
	t        target
	warm     phase
	c1, c8   phase
	c8Rounds []phase // every round of paid c=8; c8 is the median by req/s
	replays  phase
	storm    storm
	mem      []memPoint
	memErr   string
	note     string
}

func BenchmarkEdge(b *testing.B) {
	rssCalls := envInt("BENCH_RSS_CALLS", 20000)
	rounds := max(envInt("BENCH_ROUNDS", 3), 1)
	root := edgetest.RepoRoot(b)
	up := upstream(b)

	goDir := b.TempDir()
	var goflags []string
	if f := os.Getenv("BENCH_GOFLAGS"); f != "" {
		goflags = strings.Fields(f)
	}
	require.NoError(b, benchharness.BuildGo(goDir, "./worker", append([]string{"-trimpath", "-ldflags=-s -w"}, goflags...)...))
	refDir := b.TempDir()
	require.NoError(b, benchharness.BuildReference(refDir))

	targets := []target{
		{name: "Go, persistent", dir: goDir, mode: edgetest.ModePersistent},
		{name: "Go, per-request", dir: goDir, mode: edgetest.ModePerRequest},
		{name: "JS reference", dir: refDir, js: true},
	}
	start := time.Now()
	var reports []*report
	for _, t := range targets {
		reports = append(reports, &report{t: t})
	}
	runPerf(b, reports, up.tools, rounds)
	for _, r := range reports {
		calls := rssCalls
		if r.t.mode == edgetest.ModePerRequest {
			calls = min(calls, 1000) // about 40 calls/s: a larger run does not fit the time budget
		}
		runMemory(b, r, up.tools, calls)
		b.Logf("%s: c=8 %.1f req/s, %d failures", r.t.name, r.c8.res.RPS(), r.c8.res.Failures)
	}
	out := os.Getenv("BENCH_OUT")
	if out == "" {
		out = filepath.Join(root, "BENCHMARKS.md")
	}
	md := markdown(reports, time.Since(start), rssCalls, rounds, goflags)
	if out != "-" {
		require.NoError(b, os.WriteFile(out, []byte(md), 0o644))
	}
	b.Log("\n" + md)
	for _, r := range reports {
		if r.t.name == "Go, persistent" {
			b.ReportMetric(r.c8.res.RPS(), "persistent-c8-req/s")
		}
	}
}

// start launches a fresh Miniflare process serving t, seeded with the bench caller.
func start(b *testing.B, t target, tools string) (*edgetest.Edge, string, string) {
	vars := map[string]string{"TOOLS": tools, "ADMIN_TOKEN": adminToken, "TOOLGATE_RUNTIME_STATS": "on"}
	edge := edgetest.Start(b, edgetest.Options{BuildDir: t.dir, Mode: t.mode, Vars: vars,
		MigrationsDir: "store/sqlstore/migrations"})
	base := edge.URL("w0")
	key := "tg_bench_key_0123456789"
	if t.js {
		res := post(b, base+"/_seed?caller="+callerID+"&key="+key+"&amount=100000000", "", nil)
		require.Equal(b, http.StatusCreated, res.status, res.body)
		return edge, base, key
	}
	res := post(b, base+"/v1/admin/callers", `{"id":"`+callerID+`","name":"bench"}`, map[string]string{"Authorization": "Bearer " + adminToken})
	require.Equal(b, http.StatusCreated, res.status, res.body)
	var created struct{ Key string }
	require.NoError(b, json.Unmarshal([]byte(res.body), &created))
	res = post(b, base+"/v1/admin/credits", `{"caller":"`+callerID+`","amount":"1000000.00","currency":"USD","reference":"bench-seed"}`,
		map[string]string{"Authorization": "Bearer " + adminToken})
	require.Equal(b, http.StatusCreated, res.status, res.body)
	return edge, base, created.Key
}

var runID atomic.Int64

// callLoad is a paid-call load; key(i) names call i's Idempotency-Key.
func callLoad(base, bearer string, c, n int, d time.Duration, key func(i int) string) benchharness.Load {
	return benchharness.Load{Concurrency: c, N: n, Duration: d, NewRequest: func(i int) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodPost, base+"/v1/tools/bench/call", strings.NewReader(`{"text":"hello","n":`+strconv.Itoa(i)+`}`))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("Idempotency-Key", key(i))
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	}}
}

// perfRun is one target's Miniflare process for the load phases.
type perfRun struct {
	r         *report
	edge      *edgetest.Edge
	base, key string
	run       int64
}

func (pr *perfRun) uniq(tag string) func(int) string {
	return func(i int) string { return fmt.Sprintf("r%d-%s-%d", pr.run, tag, i) }
}

// measure runs l and reads the CPU workerd spent and the D1 round trips the Go handler logged meanwhile.
func (pr *perfRun) measure(l benchharness.Load) phase {
	before := procOrZero(pr.edge)
	mark := pr.edge.LogMark()
	res := benchharness.Run(context.Background(), l)
	after := procOrZero(pr.edge)
	p := phase{res: res}
	if ok := res.Requests - res.Failures; ok > 0 && after.CPU > 0 {
		p.cpuMs = float64(after.CPU-before.CPU) / float64(time.Millisecond) / float64(ok)
	}
	p.stmts = roundTrips(pr.edge.LogsSince(mark))
	return p
}

// runPerf starts every target in its own Miniflare process, all at once (the idle ones cost nothing), and
// interleaves the phases across targets, so a noisy neighbour on the machine hits them alike: each phase runs
// for every target before the next begins, and the paid c=8 phase runs in rounds whose median is reported.
func runPerf(b *testing.B, reports []*report, tools string, rounds int) {
	var runs []*perfRun
	for _, r := range reports {
		edge, base, key := start(b, r.t, tools)
		defer edge.Close()
		runs = append(runs, &perfRun{r: r, edge: edge, base: base, key: key, run: runID.Add(1)})
	}
	for _, pr := range runs {
		pr.r.warm = pr.measure(callLoad(pr.base, pr.key, 1, 30, 30*time.Second, pr.uniq("warm")))
	}
	for _, pr := range runs {
		pr.r.c1 = pr.measure(callLoad(pr.base, pr.key, 1, 300, 20*time.Second, pr.uniq("c1")))
	}
	for round := range rounds {
		for _, pr := range runs {
			pr.r.c8Rounds = append(pr.r.c8Rounds, pr.measure(callLoad(pr.base, pr.key, 8, 800, 20*time.Second, pr.uniq(fmt.Sprintf("c8r%d", round)))))
		}
	}
	for _, pr := range runs {
		byRPS := slices.Clone(pr.r.c8Rounds)
		sort.Slice(byRPS, func(i, j int) bool { return byRPS[i].res.RPS() < byRPS[j].res.RPS() })
		pr.r.c8 = byRPS[len(byRPS)/2]
	}
	// Replays reuse the first round's keys with the same input (call i's body has "n": i).
	for _, pr := range runs {
		done := pr.r.c8Rounds[0].res.Requests
		if done == 0 {
			pr.r.replays.skipped = "no completed keys"
			continue
		}
		l := callLoad(pr.base, pr.key, 8, 800, 15*time.Second, func(i int) string { return pr.uniq("c8r0")(i % done) })
		inner := l.NewRequest
		l.NewRequest = func(i int) (*http.Request, error) { return inner(i % done) } // same key, same input
		pr.r.replays = pr.measure(l)
	}
	for _, pr := range runs {
		pr.r.storm = runStorms(b, pr.base, pr.key, pr.run)
		if !pr.r.t.js {
			st := stats(b, pr.base)
			if st.Mode != pr.r.t.mode {
				pr.r.note = fmt.Sprintf("the shim ran this build %s: main_js.go does not call bridge.Serve yet", st.Mode)
			}
		}
	}
}

// runStorms sends 5 storms of 50 identical calls (one fresh key each) and times each until all answered.
func runStorms(b *testing.B, base, bearer string, run int64) storm {
	s := storm{statuses: map[int]int{}}
	for k := range 5 {
		l := callLoad(base, bearer, 50, 50, 30*time.Second, func(int) string { return fmt.Sprintf("r%d-storm-%d", run, k) })
		inner := l.NewRequest
		l.NewRequest = func(int) (*http.Request, error) { return inner(0) }
		res := benchharness.Run(context.Background(), l)
		s.times = append(s.times, res.Elapsed)
		for st, n := range res.Statuses {
			s.statuses[st] += n
		}
	}
	sort.Slice(s.times, func(i, j int) bool { return s.times[i] < s.times[j] })
	return s
}

func runMemory(b *testing.B, r *report, tools string, calls int) {
	edge, base, key := start(b, r.t, tools)
	defer edge.Close()
	run := runID.Add(1)
	checkpoints := []int{0, 1000, calls} // 0: booted and seeded, before any paid call
	if calls <= 1000 {
		checkpoints = []int{0, calls}
	}
	sent := 0
	for _, cp := range checkpoints {
		from := sent
		l := callLoad(base, key, memC, cp-sent, 15*time.Minute, func(i int) string { return fmt.Sprintf("r%d-mem-%d", run, from+i) })
		res := benchharness.Run(context.Background(), l)
		sent += res.Requests
		if res.Failures > 0 {
			r.memErr = fmt.Sprintf("%d of %d calls failed, first: %s", res.Failures, res.Requests, res.FirstErr)
		}
		p := memPoint{calls: sent, heap: -1}
		if pr, err := benchharness.Workerd(edge.PID()); err == nil {
			p.rss = pr.RSS
		}
		if !r.t.js {
			st := stats(b, base)
			p.heap, p.wasmMem, p.jsValues, p.instances = st.HeapAlloc, st.WasmMemory, st.JSValues, st.Boots
		}
		r.mem = append(r.mem, p)
	}
}

type runtimeStats struct {
	Mode       string `json:"mode"`
	Boots      int    `json:"boots"`
	HeapAlloc  int64  `json:"heapAlloc"`
	JSValues   int    `json:"jsValuesHeldByGo"`
	WasmMemory int64  `json:"wasmMemoryBytes"`
}

func stats(b *testing.B, base string) runtimeStats {
	res, err := benchharness.Client.Get(base + "/_toolgate/runtime?gc=1")
	require.NoError(b, err)
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	require.Equal(b, http.StatusOK, res.StatusCode, string(body))
	var s runtimeStats
	require.NoError(b, json.Unmarshal(body, &s))
	return s
}

func procOrZero(edge *edgetest.Edge) benchharness.Proc {
	p, _ := benchharness.Workerd(edge.PID())
	return p
}

var roundTripsRE = regexp.MustCompile(`"outcome":"(executed|replayed)".*?"roundTrips":(\d+)`)

// roundTrips averages the D1 round trips per executed or replayed call that the Go handler logged in logs.
func roundTrips(logs string) float64 {
	sum, n := 0, 0
	for _, m := range roundTripsRE.FindAllStringSubmatch(logs, -1) {
		v, _ := strconv.Atoi(m[2])
		sum += v
		n++
	}
	if n == 0 {
		return 0
	}
	return float64(sum) / float64(n)
}

type response struct {
	status int
	body   string
}

func post(b *testing.B, u, body string, hdr map[string]string) response {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	require.NoError(b, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := benchharness.Client.Do(req)
	require.NoError(b, err)
	defer res.Body.Close()
	rb, err := io.ReadAll(res.Body)
	require.NoError(b, err)
	return response{res.StatusCode, string(rb)}
}

type loopback struct {
	tools string
	calls atomic.Int64
}

// upstream is the tool's loopback upstream: a small JSON answer, at once.
func upstream(b *testing.B) *loopback {
	u := &loopback{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ok":true,"echo":%s}`, body)
	}))
	b.Cleanup(srv.Close)
	u.tools = `{"tools":[{"name":"bench","description":"bench echo","price":"0.01","currency":"USD","upstream":{"url":"` + srv.URL + `/echo"}}]}`
	return u
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func markdown(reports []*report, took time.Duration, rssCalls, rounds int, goflags []string) string {
	var w bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
	}
	mb := func(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) }
	load := func(ph phase) string {
		if ph.skipped != "" {
			return "– (" + ph.skipped + ")"
		}
		s := fmt.Sprintf("%.1f (%s / %s)", ph.res.RPS(), ms(ph.res.Percentile(50)), ms(ph.res.Percentile(99)))
		if ph.res.Failures > 0 {
			s += fmt.Sprintf(" ⚠ %d failed", ph.res.Failures)
		}
		return s
	}
	p("# Benchmarks\n\n")
	p("Generated by `make bench` (`go test -run '^$' -bench Edge -benchtime 1x ./worker/bench`")
	if len(goflags) > 0 {
		p(", `BENCH_GOFLAGS=%q`", strings.Join(goflags, " "))
	}
	p(") on %s. Do not edit by hand; see worker/bench for what is measured.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	p("- Machine: %s, %d CPUs (%s), %s\n", machine(), runtime.NumCPU(), cpuModel(), osRelease())
	p("- Versions: %s, Node %s, wrangler %s, miniflare %s, workerd %s, syumai/workers %s\n",
		runtime.Version(), cmdOut("node", "--version"), npmVersion("wrangler"), npmVersion("miniflare"), workerdVersion(), modVersion("github.com/syumai/workers"))
	p("- Workload: `POST /v1/tools/bench/call` with a bearer key and an `Idempotency-Key`, price 0.01 USD, a loopback upstream answering at once. "+
		"Go runs the real handler (`./worker`); the JS reference (worker/js/reference) runs the same SQL (store/sqlstore's, verbatim) the same way. "+
		"For the load phases the three targets run at once, each in its own fresh Miniflare process, and every phase runs for each target in turn before the next phase "+
		"(paid c=8 in %d such rounds; the table shows the median round), so a noisy neighbour hits them alike. Memory is measured in another fresh process per target. "+
		"All on 127.0.0.1, bounded in count and time. Took %s.\n\n", rounds, took.Round(time.Second))

	if note := os.Getenv("BENCH_NOTE"); note != "" {
		p("%s\n\n", note)
	}
	p("## Throughput and latency\n\nreq/s (p50 / p99 ms). Paid calls use a new key each; replays repeat completed keys (c=8); the storm is 50 identical calls at once on a new key (5 storms).\n\n")
	p("| target | paid, c=1 | paid, c=8 (median round) | replays, c=8 | storm of 50: all answered, median (max) ms | workerd CPU ms per paid call (c=8) | D1 round trips per paid call / replay |\n")
	p("|---|---|---|---|---|---|---|\n")
	for _, r := range reports {
		stormTxt := "–"
		if n := len(r.storm.times); n > 0 {
			stormTxt = fmt.Sprintf("%s (%s) %s", ms(r.storm.times[n/2]), ms(r.storm.times[n-1]), statuses(r.storm.statuses))
		}
		stmts := "2 / 1 (by construction)"
		if !r.t.js {
			stmts = fmt.Sprintf("%.2f / %.2f (logged)", r.c8.stmts, r.replays.stmts)
		}
		p("| %s | %s | %s | %s | %s | %.2f | %s |\n", r.t.name, load(r.c1), load(r.c8), load(r.replays), stormTxt, r.c8.cpuMs, stmts)
	}
	p("\nPaid c=8, every round (req/s):")
	for _, r := range reports {
		var xs []string
		for _, ph := range r.c8Rounds {
			xs = append(xs, fmt.Sprintf("%.1f", ph.res.RPS()))
		}
		p(" %s %s;", r.t.name, strings.Join(xs, " / "))
	}
	p("\n")
	p("\n## Memory\n\nworkerd RSS (MB) after N paid calls at c=%d, each target in a fresh process; 0 is after boot and seeding, before the first paid call. "+
		"Go heap: `runtime.MemStats.HeapAlloc` after a GC, and the instance's linear memory (`WebAssembly.Memory`), "+
		"reported by the worker (`/_toolgate/runtime`), with the number of JS values the Go instance holds and the Go instances booted so far.\n\n", memC)
	p("| target | calls | workerd RSS MB | × JS reference | Go heap KB | Go wasm memory MB | JS values held by Go | instances booted |\n|---|---|---|---|---|---|---|---|\n")
	ref := map[int]int64{}
	for _, r := range reports {
		if r.t.js {
			for _, m := range r.mem {
				ref[m.calls] = m.rss
			}
		}
	}
	for _, r := range reports {
		for _, m := range r.mem {
			ratio, heap, wmem, vals, inst := "–", "–", "–", "–", "–"
			if x, ok := ref[m.calls]; ok && x > 0 {
				ratio = fmt.Sprintf("%.2f", float64(m.rss)/float64(x))
			}
			if m.heap >= 0 {
				heap, wmem, vals, inst = strconv.FormatInt(m.heap>>10, 10), mb(m.wasmMem), strconv.Itoa(m.jsValues), strconv.Itoa(m.instances)
			}
			p("| %s | %d | %s | %s | %s | %s | %s | %s |\n", r.t.name, m.calls, mb(m.rss), ratio, heap, wmem, vals, inst)
		}
	}
	p("\nThe memory run makes %d calls (BENCH_RSS_CALLS); per-request mode stops at 1000.\n", rssCalls)
	var notes []string
	for _, r := range reports {
		if r.note != "" {
			notes = append(notes, fmt.Sprintf("- %s: %s.", r.t.name, r.note))
		}
		if r.memErr != "" {
			notes = append(notes, fmt.Sprintf("- %s memory run: %s.", r.t.name, r.memErr))
		}
	}
	var pers, perReq, js *report
	for _, r := range reports {
		switch {
		case r.t.js:
			js = r
		case r.t.mode == edgetest.ModePerRequest:
			perReq = r
		default:
			pers = r
		}
	}
	if pers != nil && perReq != nil && js != nil && perReq.c8.res.RPS() > 0 && js.c8.res.RPS() > 0 {
		p("\n## Ratios (this run)\n\n- Go persistent / Go per-request, paid calls at c=8: **%.1f×** (target ≥ 10×); round by round: %s.\n",
			pers.c8.res.RPS()/perReq.c8.res.RPS(), roundRatios(pers, perReq))
		p("- Go persistent / JS reference, paid calls at c=8: **%.2f** of the JS throughput; c=1: %.2f.\n",
			pers.c8.res.RPS()/js.c8.res.RPS(), pers.c1.res.RPS()/max(js.c1.res.RPS(), 1e-9))
		if pers.c8.cpuMs > 0 && js.c8.cpuMs > 0 {
			p("- workerd CPU per paid call: Go persistent %.2f ms, JS %.2f ms, Go per-request %.2f ms.\n", pers.c8.cpuMs, js.c8.cpuMs, perReq.c8.cpuMs)
		}
	}
	if len(notes) > 0 {
		p("\n## Notes\n\n%s\n", strings.Join(notes, "\n"))
	}
	return w.String()
}

// roundRatios lists a's paid c=8 throughput over b's, round by round (the rounds ran interleaved).
func roundRatios(a, b *report) string {
	var xs []string
	for i := range min(len(a.c8Rounds), len(b.c8Rounds)) {
		if rps := b.c8Rounds[i].res.RPS(); rps > 0 {
			xs = append(xs, fmt.Sprintf("%.1f×", a.c8Rounds[i].res.RPS()/rps))
		}
	}
	return strings.Join(xs, ", ")
}

func statuses(m map[int]int) string {
	var keys []int
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", m[k], k))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func cmdOut(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func npmVersion(pkg string) string {
	root, err := benchharness.RepoRoot()
	if err != nil {
		return "?"
	}
	b, err := os.ReadFile(filepath.Join(root, "node_modules", pkg, "package.json"))
	if err != nil {
		return "?"
	}
	var v struct{ Version string }
	_ = json.Unmarshal(b, &v)
	return v.Version
}

func workerdVersion() string {
	root, err := benchharness.RepoRoot()
	if err != nil {
		return "?"
	}
	return cmdOut(filepath.Join(root, "node_modules", "@cloudflare", "workerd-linux-64", "bin", "workerd"), "--version")
}

func modVersion(mod string) string { return cmdOut("go", "list", "-m", "-f", "{{.Version}}", mod) }

func machine() string { return runtime.GOOS + "/" + runtime.GOARCH }

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return "?"
}

func osRelease() string {
	b, _ := os.ReadFile("/etc/os-release")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "Linux"
}
