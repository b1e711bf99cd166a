//go:build !js

// Package bench is `make bench`: the Go worker (./worker) in both of the shim's modes, the plain-JS
// reference worker (worker/js/reference) and the Turso build (on the Hrana test server, in this process),
// side by side in one run on the same workerd, each in fresh Miniflare processes on loopback. It writes
// BENCHMARKS.md, led by the rows of issue 16 against their targets.
//
// The phases: paid calls (c=1, c=8 in rounds), replays and a 50-way storm on an instant upstream, under
// load, with workerd's CPU and the D1 round trips logged (bench_test.go); a 50-way storm on a 300 ms
// upstream over two isolates, a simulated round trip per D1 call, and the first request on a fresh
// isolate (latency_test.go, through benchharness.MeterD1); memory over many calls. Every phase is
// bounded in count and time. Settings (environment):
//
//	BENCH_RSS_CALLS   paid calls of the memory run (default 20000)
//	BENCH_ROUNDS      rounds of the paid c=8 phase, interleaved across targets (default 3; the median is reported)
//	BENCH_STORMS      storms of the 300 ms upstream phase (default 8)
//	BENCH_COLD        fresh starts per target for the cold-start phase (default 3)
//	BENCH_RTT_MS      the simulated D1 round trip, ms (default 20; 0 skips that phase)
//	BENCH_GOFLAGS     extra flags for building ./worker (e.g. -overlay=...)
//	BENCH_OUT         the report (default <repo>/BENCHMARKS.md; "-" writes none)
//	BENCH_NOTE        a paragraph for the report (e.g. what BENCH_GOFLAGS changes)
//	BENCH_PHASES      the phases to run, comma-separated, of load, storms, rtt, cold, memory (default all;
//	                  cold needs load); for a quick comparison while working, with BENCH_OUT=-
//	BENCH_TARGETS     the targets, comma-separated, of persistent, per-request, js, turso (default all)
//	BENCH_ONLY        "cold": only the cold-start phase, printed, without writing the report
package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store/libsql"
	"github.com/toolgate/toolgate-go/store/libsql/hranatest"
	"github.com/toolgate/toolgate-go/store/sqlstore"
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
	name  string
	dir   string // edgetest BuildDir
	mode  string // the shim's GO_RUNTIME; "" for the JS reference
	js    bool
	vars  map[string]string // extra vars (the Turso build's TURSO_DATABASE_URL)
	hrana *hranatest.Server // the Turso build's database; nil on D1
	meter string            // the same worker behind the D1 meter (benchharness.MeterD1); "" if none
}

// phase is one measured load.
type phase struct {
	res     benchharness.Result
	cpuMs   float64 // workerd CPU per successful request, ms
	stmts   float64 // D1 statements per call (from the Go handler's log); 0 if unknown
	hrana   float64 // HTTP requests to the Hrana server per successful call; 0 if not Turso
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
	persist  string // the load phases' D1 persist directory, seeded (the cold starts reuse it)
	key      string // the bench caller's bearer key there
	slow     slowStorms
	rtt      rttRun
	cold     []coldStart
	coldSeed []coldStart // the same target booted at start-up (TOOLGATE_BOOT_SEED); Go persistent only
}

func BenchmarkEdge(b *testing.B) {
	rssCalls := envInt("BENCH_RSS_CALLS", 20000)
	rounds := max(envInt("BENCH_ROUNDS", 3), 1)
	storms := envInt("BENCH_STORMS", 8)
	colds := envInt("BENCH_COLD", 3)
	rttMs := 20
	if v, err := strconv.Atoi(os.Getenv("BENCH_RTT_MS")); err == nil && v >= 0 {
		rttMs = v
	}
	root := edgetest.RepoRoot(b)
	up := upstream(b)

	phases, only := envSet("BENCH_PHASES")
	run := func(phase string) bool { return !only || phases[phase] }
	targeted, onlyTargets := envSet("BENCH_TARGETS")
	wanted := func(t string) bool { return !onlyTargets || targeted[t] }
	if run("cold") && !run("load") {
		b.Fatal("BENCH_PHASES: cold reuses the load phase's database; add load")
	}

	var goflags []string
	if f := os.Getenv("BENCH_GOFLAGS"); f != "" {
		goflags = strings.Fields(f)
	}
	// The flags of `make build` and `make build-turso`, so the sizes are the deployed ones.
	flags := append([]string{"-trimpath", "-ldflags=-s -w"}, goflags...)
	goDir, tursoDir, refDir := b.TempDir(), b.TempDir(), b.TempDir()
	require.NoError(b, benchharness.BuildGo(goDir, "./worker", flags...))
	if wanted("turso") {
		require.NoError(b, benchharness.BuildGo(tursoDir, "./worker", append(slices.Clone(flags), "-tags=turso")...))
	}
	require.NoError(b, benchharness.BuildReference(refDir))
	goMeter, refMeter := b.TempDir(), b.TempDir()
	require.NoError(b, benchharness.MeterD1(goDir, goMeter))
	require.NoError(b, benchharness.MeterD1(refDir, refMeter))
	sizes := wasmSizes{d1: gzipSize(b, filepath.Join(goDir, "app.wasm"))}
	if wanted("turso") {
		sizes.turso = gzipSize(b, filepath.Join(tursoDir, "app.wasm"))
	}

	// The Turso build's database: the Hrana test server on loopback, in this process, with the schema
	// applied natively through libsql-client-go (as `make migrate-turso` does).
	hrana, err := hranatest.Start(filepath.Join(b.TempDir(), "turso.db"))
	require.NoError(b, err)
	b.Cleanup(func() { _ = hrana.Close() })
	ldb, err := libsql.Open(hrana.URL(), "")
	require.NoError(b, err)
	require.NoError(b, sqlstore.Migrate(context.Background(), ldb))
	require.NoError(b, ldb.DB().Close())

	targets := []target{
		{name: "Go, persistent", dir: goDir, mode: edgetest.ModePersistent, meter: goMeter},
		{name: "Go, per-request", dir: goDir, mode: edgetest.ModePerRequest, meter: goMeter},
		{name: "JS reference", dir: refDir, js: true, meter: refMeter},
		{name: "Go on Turso, persistent", dir: tursoDir, mode: edgetest.ModePersistent, hrana: hrana,
			vars: map[string]string{"TURSO_DATABASE_URL": hrana.URL()}},
	}
	start := time.Now()
	var reports []*report
	for i, t := range targets {
		if wanted([]string{"persistent", "per-request", "js", "turso"}[i]) {
			reports = append(reports, &report{t: t})
		}
	}
	if only := os.Getenv("BENCH_ONLY"); only != "" {
		require.Equal(b, "cold", only, "BENCH_ONLY: only the cold-start phase (cold) runs alone")
		runColdOnly(b, reports, up.tools, colds)
		return
	}
	phaseStart := time.Now()
	took := map[string]time.Duration{}
	lap := func(name string) { took[name] = time.Since(phaseStart).Round(time.Second); phaseStart = time.Now() }
	if run("load") {
		runPerf(b, reports, up.tools, rounds)
		lap("load")
	}
	if run("storms") {
		runSlowStorms(b, reports, up, storms)
		lap("slow storms")
	}
	if rttMs > 0 && run("rtt") {
		runRTT(b, reports, up.tools, rttMs)
		lap("round trip")
	}
	if run("cold") {
		runColdStarts(b, reports, up.tools, colds)
		lap("cold starts")
	}
	for _, r := range reports {
		if r.t.hrana != nil || !run("memory") {
			continue // the memory run is about workerd with D1
		}
		calls := rssCalls
		if r.t.mode == edgetest.ModePerRequest {
			calls = min(calls, 1000) // about 40 calls/s: a larger run does not fit the time budget
		}
		runMemory(b, r, up.tools, calls)
		b.Logf("%s: c=8 %.1f req/s, %d failures", r.t.name, r.c8.res.RPS(), r.c8.res.Failures)
	}
	if run("memory") {
		lap("memory")
	}
	out := os.Getenv("BENCH_OUT")
	if out == "" {
		out = filepath.Join(root, "BENCHMARKS.md")
	}
	md := markdown(reports, runInfo{took: time.Since(start), phases: took, rssCalls: rssCalls, rounds: rounds,
		storms: storms, colds: colds, rttMs: rttMs, goflags: goflags, sizes: sizes})
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

// runColdOnly is BENCH_ONLY=cold: it seeds every target's database in a process of its own, runs the
// cold-start phase and prints its section of the report (BENCHMARKS.md is not written).
func runColdOnly(b *testing.B, reports []*report, tools string, colds int) {
	for _, r := range reports {
		edge, _, key := start(b, r.t, tools)
		r.persist, r.key = edge.PersistDir, key
		edge.Close()
	}
	runColdStarts(b, reports, tools, colds)
	var w bytes.Buffer
	coldSection(&w, reports, runInfo{colds: colds})
	fmt.Println(w.String()) // not b.Log: the testing package cuts a benchmark's log after 10 lines
}

// wasmSizes are the gzip -9 sizes of the two builds, bytes.
type wasmSizes struct{ d1, turso int64 }

// gzipSize returns the size of path compressed with gzip at its best compression: by the gzip program
// (`gzip -9`, as `make build` reports it), else by compress/gzip (whose deflate compresses the wasm
// about 1 % less well).
func gzipSize(b *testing.B, path string) int64 {
	if out, err := exec.Command("gzip", "-9", "-c", path).Output(); err == nil {
		return int64(len(out))
	}
	raw, err := os.ReadFile(path)
	require.NoError(b, err)
	var n countWriter
	zw, err := gzip.NewWriterLevel(&n, gzip.BestCompression)
	require.NoError(b, err)
	_, err = zw.Write(raw)
	require.NoError(b, err)
	require.NoError(b, zw.Close())
	return int64(n)
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// runInfo is what the report says about the run itself.
type runInfo struct {
	took                 time.Duration
	phases               map[string]time.Duration
	rssCalls, rounds     int
	storms, colds, rttMs int
	goflags              []string
	sizes                wasmSizes
}

// start launches a fresh Miniflare process serving t, seeded with the bench caller.
func start(b *testing.B, t target, tools string) (*edgetest.Edge, string, string) {
	edge := launch(b, t, tools, edgetest.Options{})
	return edge, edge.URL("w0"), seed(b, t, edge.URL("w0"))
}

// launch starts a fresh Miniflare process serving t with opts (BuildDir, Mode, Vars and MigrationsDir are
// t's).
func launch(b *testing.B, t target, tools string, opts edgetest.Options) *edgetest.Edge {
	vars := map[string]string{"TOOLS": tools, "ADMIN_TOKEN": adminToken, "TOOLGATE_RUNTIME_STATS": "on"}
	maps.Copy(vars, t.vars)
	maps.Copy(vars, opts.Vars)
	if opts.BuildDir == "" {
		opts.BuildDir = t.dir
	}
	opts.Mode, opts.Vars, opts.MigrationsDir = t.mode, vars, "store/sqlstore/migrations"
	return edgetest.Start(b, opts)
}

// seed creates the bench caller with a large credit through the worker at base and returns its bearer
// key.
func seed(b *testing.B, t target, base string) string {
	key := "tg_bench_key_0123456789"
	if t.js {
		res := post(b, base+"/_seed?caller="+callerID+"&key="+key+"&amount=100000000", "", nil)
		require.Equal(b, http.StatusCreated, res.status, res.body)
		return key
	}
	res := post(b, base+"/v1/admin/callers", `{"id":"`+callerID+`","name":"bench"}`, map[string]string{"Authorization": "Bearer " + adminToken})
	require.Equal(b, http.StatusCreated, res.status, res.body)
	var created struct{ Key string }
	require.NoError(b, json.Unmarshal([]byte(res.body), &created))
	res = post(b, base+"/v1/admin/credits", `{"caller":"`+callerID+`","amount":"1000000.00","currency":"USD","reference":"bench-seed"}`,
		map[string]string{"Authorization": "Bearer " + adminToken})
	require.Equal(b, http.StatusCreated, res.status, res.body)
	return created.Key
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
	var reqs int64
	if h := pr.r.t.hrana; h != nil {
		reqs = h.Requests()
	}
	res := benchharness.Run(context.Background(), l)
	after := procOrZero(pr.edge)
	p := phase{res: res}
	if ok := res.Requests - res.Failures; ok > 0 && after.CPU > 0 {
		p.cpuMs = float64(after.CPU-before.CPU) / float64(time.Millisecond) / float64(ok)
	}
	if h := pr.r.t.hrana; h != nil && res.Requests > res.Failures {
		p.hrana = float64(h.Requests()-reqs) / float64(res.Requests-res.Failures)
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
		r.persist, r.key = edge.PersistDir, key
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
	// Startup is the shim's start-up timings (worker/js/shim/worker.mjs).
	Startup shimStartup `json:"startup"`
}

func stats(b *testing.B, base string) runtimeStats {
	res, err := benchharness.Client.Get(base + "/_toolgate/runtime?gc=1")
	require.NoError(b, err)
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	require.Equal(b, http.StatusOK, res.StatusCode, string(body))
	s := runtimeStats{Startup: shimStartup{RehearsalMs: -1, InstantiateMs: -1}} // a shim without start-up timings
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

	mu       sync.Mutex
	answered map[string]time.Time // the slow tool: when it answered, by the input's "storm"
	runs     map[string]int       // the slow tool: executions, by the input's "storm"
}

// slowMs is how long the slow tool's upstream takes to answer.
const slowMs = 300

// upstream is the tools' loopback upstream: "bench" answers a small JSON at once; "slow" answers after
// slowMs and records when it answered, by the input's "storm" member.
func upstream(b *testing.B) *loopback {
	u := &loopback{answered: map[string]time.Time{}, runs: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		u.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ok":true,"echo":%s}`, body)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var in struct{ Storm string }
		_ = json.Unmarshal(body, &in)
		time.Sleep(slowMs * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		u.mu.Lock()
		u.runs[in.Storm]++
		u.answered[in.Storm] = time.Now()
		u.mu.Unlock()
		fmt.Fprintf(w, `{"ok":true,"echo":%s}`, body)
	})
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	u.tools = `{"tools":[` +
		`{"name":"bench","description":"bench echo","price":"0.01","currency":"USD","upstream":{"url":"` + srv.URL + `/echo"}},` +
		`{"name":"slow","description":"bench echo after 300 ms","price":"0.01","currency":"USD","upstream":{"url":"` + srv.URL + `/slow"}}]}`
	return u
}

// slowAnswer returns when the slow tool answered the storm's input and how many times it ran for it.
func (u *loopback) slowAnswer(storm string) (time.Time, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.answered[storm], u.runs[storm]
}

// envSet reads a comma-separated list; only is false when the variable is unset or empty.
func envSet(name string) (set map[string]bool, only bool) {
	set = map[string]bool{}
	for _, f := range strings.Split(os.Getenv(name), ",") {
		if f = strings.TrimSpace(f); f != "" {
			set[f] = true
		}
	}
	return set, len(set) > 0
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
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
