//go:build !js

package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/benchharness"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// The phases of issue 16: a duplicate storm on a slow upstream over two isolates, a simulated edge
// round trip per D1 call, and the first request on a fresh isolate. They run the workers behind the D1
// meter (benchharness.MeterD1), which counts what reaches D1 and adds the round trip.

// stormSize is the number of identical calls in one storm.
const stormSize = 50

// slowStorms is the slow-upstream storm phase of one target: storms of stormSize identical calls on a
// new key each, half sent to each of two isolates sharing one D1, on the slow tool (slowMs).
type slowStorms struct {
	storms   int
	walls    []time.Duration // per storm: from the send to the last answer
	statuses map[int]int
	runs     int             // upstream executions over all storms (one per storm is right)
	same     []time.Duration // waiters on the owner's isolate: answer minus the upstream's answer
	other    []time.Duration // waiters on the other isolate: the same
	owner    []time.Duration // the owner itself: its answer minus the upstream's answer
	// sameAfter and otherAfter are the waiters' answers minus the owner's answer: the latency a waiter
	// adds once the owner has completed (the owner answers right after its Complete returns).
	sameAfter, otherAfter []time.Duration
	d1                    benchharness.D1Stats
	logged                int // D1 round trips the Go handler logged for every call of every storm
	err                   string
}

// stormAnswer is one call of a storm.
type stormAnswer struct {
	isolate  int
	at       time.Time
	status   int
	replayed bool
}

// runSlowStorms runs the slow storms for every target with a metered build, each in a fresh Miniflare
// process with two isolates, the storms interleaved across targets.
func runSlowStorms(b *testing.B, reports []*report, up *loopback, storms int) {
	type run struct {
		r     *report
		edge  *edgetest.Edge
		bases []string
		key   string
	}
	var runs []*run
	for _, r := range reports {
		if r.t.meter == "" {
			continue
		}
		edge := launch(b, r.t, up.tools, edgetest.Options{BuildDir: r.t.meter, Workers: []string{"w0", "w1"}})
		defer edge.Close()
		bases := []string{edge.URL("w0"), edge.URL("w1")}
		runs = append(runs, &run{r: r, edge: edge, bases: bases, key: seed(b, r.t, bases[0])})
		r.slow.statuses = map[int]int{}
	}
	id := runID.Add(1)
	// Warm-up: one call of the slow tool on each isolate, so that each has seen the tool's latency (the
	// Go engine polls near it) and has the caller cached.
	for _, ru := range runs {
		var wg sync.WaitGroup
		for i, base := range ru.bases {
			wg.Go(func() {
				storm := fmt.Sprintf("r%d-%s-warm-%d", id, slug(ru.r.t.name), i)
				res, err := slowCall(base, ru.key, storm)
				if err == nil && res != http.StatusOK {
					err = fmt.Errorf("status %d", res)
				}
				if err != nil && ru.r.slow.err == "" {
					ru.r.slow.err = "warm-up: " + err.Error()
				}
			})
		}
		wg.Wait()
	}
	before := map[*run]benchharness.D1Stats{}
	for _, ru := range runs {
		d, err := benchharness.D1(ru.bases...)
		require.NoError(b, err)
		before[ru] = d
	}
	for k := range storms {
		for _, ru := range runs {
			s := &ru.r.slow
			storm := fmt.Sprintf("r%d-%s-storm-%d", id, slug(ru.r.t.name), k)
			mark := ru.edge.LogMark()
			sent := time.Now()
			answers := fireStorm(ru.bases, ru.key, storm)
			answered, runs := up.slowAnswer(storm)
			s.storms++
			s.runs += runs
			s.logged += loggedRoundTrips(ru.edge.LogsSince(mark))
			last := sent
			owner := -1
			var ownerAt time.Time
			for _, a := range answers {
				s.statuses[a.status]++
				if a.at.After(last) {
					last = a.at
				}
				if a.status == http.StatusOK && !a.replayed {
					owner, ownerAt = a.isolate, a.at
					s.owner = append(s.owner, a.at.Sub(answered))
				}
			}
			s.walls = append(s.walls, last.Sub(sent))
			if owner < 0 || answered.IsZero() {
				continue // no owner answered: no waiter latency to measure
			}
			for _, a := range answers {
				if a.status != http.StatusOK || !a.replayed {
					continue
				}
				if a.isolate == owner {
					s.same = append(s.same, a.at.Sub(answered))
					s.sameAfter = append(s.sameAfter, a.at.Sub(ownerAt))
				} else {
					s.other = append(s.other, a.at.Sub(answered))
					s.otherAfter = append(s.otherAfter, a.at.Sub(ownerAt))
				}
			}
		}
	}
	for _, ru := range runs {
		after, err := benchharness.D1(ru.bases...)
		require.NoError(b, err)
		ru.r.slow.d1 = after.Sub(before[ru])
		for _, xs := range [][]time.Duration{ru.r.slow.walls, ru.r.slow.same, ru.r.slow.other, ru.r.slow.owner,
			ru.r.slow.sameAfter, ru.r.slow.otherAfter} {
			slices.Sort(xs)
		}
	}
}

// fireStorm sends stormSize identical calls of the slow tool at once, alternating between bases, and
// returns when each was answered.
func fireStorm(bases []string, bearer, storm string) []stormAnswer {
	answers := make([]stormAnswer, stormSize)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range stormSize {
		wg.Go(func() {
			<-gate
			a := stormAnswer{isolate: i % len(bases)}
			req, err := slowRequest(bases[a.isolate], bearer, storm)
			if err == nil {
				var res *http.Response
				if res, err = benchharness.Client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					a.status, a.replayed = res.StatusCode, res.Header.Get("Idempotent-Replayed") == "true"
				}
			}
			a.at = time.Now()
			answers[i] = a
		})
	}
	close(gate)
	wg.Wait()
	return answers
}

// slowRequest is a call of the slow tool whose Idempotency-Key and input both name the storm (bounded by
// benchharness.Client's timeout).
func slowRequest(base, bearer, storm string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/v1/tools/slow/call", strings.NewReader(`{"storm":"`+storm+`"}`))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Idempotency-Key", storm)
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// slowCall makes one call of the slow tool and returns its status.
func slowCall(base, bearer, storm string) (int, error) {
	req, err := slowRequest(base, bearer, storm)
	if err != nil {
		return 0, err
	}
	res, err := benchharness.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

// slug turns a target's name into letters, digits and dashes, for keys: a comma in an Idempotency-Key
// is refused (it may be two joined headers).
func slug(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, name)
}

var callRoundTripsRE = regexp.MustCompile(`"msg":"call".*?"roundTrips":(\d+)`)

// loggedRoundTrips sums the D1 round trips of every call the Go handler logged in logs, whatever its
// outcome (executed, waited, replayed, failed).
func loggedRoundTrips(logs string) int {
	sum := 0
	for _, m := range callRoundTripsRE.FindAllStringSubmatch(logs, -1) {
		v, _ := strconv.Atoi(m[1])
		sum += v
	}
	return sum
}

// rttRun is the simulated-round-trip phase of one target: every D1 call waits rttMs first.
type rttRun struct {
	paid, replays    benchharness.Result
	d1Paid, d1Replay float64 // metered D1 round trips per paid call / replay
	skipped          string
}

const (
	rttC     = 4   // concurrency of the round-trip phase
	rttCalls = 200 // calls per load of the round-trip phase
)

// runRTT runs paid calls and then replays of them, with rttMs added to every D1 call, for every
// target with a metered build except Go per-request, each in a fresh Miniflare process, the loads
// interleaved across targets.
func runRTT(b *testing.B, reports []*report, tools string, rttMs int) {
	type run struct {
		r         *report
		base, key string
		edge      *edgetest.Edge
	}
	var runs []*run
	for _, r := range reports {
		if r.t.meter == "" || r.t.mode == edgetest.ModePerRequest {
			continue
		}
		edge := launch(b, r.t, tools, edgetest.Options{BuildDir: r.t.meter, Vars: map[string]string{"BENCH_D1_RTT_MS": strconv.Itoa(rttMs)}})
		defer edge.Close()
		base := edge.URL("w0")
		runs = append(runs, &run{r: r, base: base, key: seed(b, r.t, base), edge: edge})
	}
	id := runID.Add(1)
	keys := func(ru *run) func(int) string {
		return func(i int) string { return fmt.Sprintf("r%d-%s-rtt-%d", id, slug(ru.r.t.name), i) }
	}
	measure := func(ru *run, l benchharness.Load) (benchharness.Result, float64) {
		before, err := benchharness.D1(ru.base)
		require.NoError(b, err)
		res := benchharness.Run(context.Background(), l)
		after, err := benchharness.D1(ru.base)
		require.NoError(b, err)
		per := 0.0
		if ok := res.Requests - res.Failures; ok > 0 {
			per = float64(after.Sub(before).Calls) / float64(ok)
		}
		return res, per
	}
	for _, ru := range runs { // warm: the caller cached, the runtime booted
		benchharness.Run(context.Background(), callLoad(ru.base, ru.key, 1, 10, 20*time.Second, func(i int) string { return fmt.Sprintf("r%d-%s-rttwarm-%d", id, slug(ru.r.t.name), i) }))
	}
	for _, ru := range runs {
		ru.r.rtt.paid, ru.r.rtt.d1Paid = measure(ru, callLoad(ru.base, ru.key, rttC, rttCalls, 30*time.Second, keys(ru)))
	}
	for _, ru := range runs {
		done := ru.r.rtt.paid.Requests
		if done == 0 {
			ru.r.rtt.skipped = "no paid calls"
			continue
		}
		l := callLoad(ru.base, ru.key, rttC, rttCalls, 30*time.Second, func(i int) string { return keys(ru)(i % done) })
		inner := l.NewRequest
		l.NewRequest = func(i int) (*http.Request, error) { return inner(i % done) }
		ru.r.rtt.replays, ru.r.rtt.d1Replay = measure(ru, l)
	}
}

// coldStart is one fresh Miniflare process: how long until it served, its first paid call and the
// median of the warm ones after it, in wall time and in CPU of workerd's main thread (where the
// isolates run; -1 if unknown), that thread's CPU before the first call (workerd's and the module's
// start-up), and the shim's own start-up timings (Go targets).
type coldStart struct {
	ready, first, warm          time.Duration
	firstCPU, warmCPU, readyCPU time.Duration
	startup                     shimStartup
	err                         string
}

// shimStartup is what the shim measured of its start-up (worker/js/shim/worker.mjs), ms; -1 if unknown.
type shimStartup struct {
	RehearsalMs   float64 `json:"rehearsalMs"`
	InstantiateMs float64 `json:"instantiateMs"`
	Rehearsal     string  `json:"rehearsal"`
	BootMs        float64 `json:"bootMs"`
	Boot          string  `json:"boot"`
}

// benchBootSeed is the TOOLGATE_BOOT_SEED of the cold starts booted at start-up.
const benchBootSeed = "8d3f2a61c0b94e7d5a1f6e2c9b0d4a7e3c5f1b8a6d2e9c4f0b7a1d5e3c8f2a6b"

// coldWarmCalls is how many paid calls follow the first one on a fresh isolate.
const coldWarmCalls = 5

// runColdStarts starts each target afresh reps times (interleaved), on the D1 its load phases used
// (seeded), and times its first paid call and the warm ones after it. A Go persistent target also starts
// booted at start-up (TOOLGATE_BOOT_SEED), into coldSeed.
func runColdStarts(b *testing.B, reports []*report, tools string, reps int) {
	id := runID.Add(1)
	for rep := range reps {
		for _, r := range reports {
			if r.key == "" {
				continue
			}
			r.cold = append(r.cold, coldStartOnce(b, r, tools, nil, fmt.Sprintf("r%d-cold-%d", id, rep)))
			if !r.t.js && r.t.mode == edgetest.ModePersistent {
				r.coldSeed = append(r.coldSeed, coldStartOnce(b, r, tools, map[string]string{"TOOLGATE_BOOT_SEED": benchBootSeed},
					fmt.Sprintf("r%d-seed-%d", id, rep)))
			}
		}
	}
}

// coldStartOnce starts r's target afresh with vars on its seeded D1 and times its first paid call and the
// warm ones after it (keys prefix-0, prefix-1, ...).
func coldStartOnce(b *testing.B, r *report, tools string, vars map[string]string, prefix string) coldStart {
	t0 := time.Now()
	edge := launch(b, r.t, tools, edgetest.Options{PersistDir: r.persist, Vars: vars})
	c := coldStart{ready: time.Since(t0), firstCPU: -1, warmCPU: -1, readyCPU: -1,
		startup: shimStartup{RehearsalMs: -1, InstantiateMs: -1, BootMs: -1}}
	base := edge.URL("w0")
	mainCPU := func() time.Duration {
		d, err := benchharness.WorkerdMainCPU(edge.PID())
		if err != nil {
			return -1
		}
		return d
	}
	var warm, warmCPU []time.Duration
	for i := range 1 + coldWarmCalls {
		l := callLoad(base, r.key, 1, 1, 30*time.Second, func(int) string { return fmt.Sprintf("%s-%d", prefix, i) })
		cpu0 := mainCPU()
		res := benchharness.Run(context.Background(), l)
		cpu := mainCPU() - cpu0
		if cpu0 < 0 {
			cpu = -1
		}
		if res.Failures > 0 && c.err == "" {
			c.err = res.FirstErr
		}
		if i == 0 {
			c.first, c.firstCPU, c.readyCPU = res.Latencies[0], cpu, cpu0
		} else {
			warm, warmCPU = append(warm, res.Latencies[0]), append(warmCPU, cpu)
		}
	}
	slices.Sort(warm)
	slices.Sort(warmCPU)
	c.warm, c.warmCPU = warm[len(warm)/2], warmCPU[len(warmCPU)/2]
	if c.firstCPU < 0 || c.warmCPU < 0 {
		c.firstCPU, c.warmCPU = -1, -1
	}
	if !r.t.js {
		c.startup = stats(b, base).Startup
	}
	edge.Close()
	return c
}
