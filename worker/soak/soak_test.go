//go:build soak

// Package soak runs the compiled worker for minutes under mixed traffic, injected D1 faults and crashes,
// and proves the money path after every minute (`make soak`; SOAK_MINUTES, default 5, at most 30).
//
// Three isolates serve one D1 in one Miniflare process (edgetest) on 127.0.0.1, in front of a loopback
// upstream (faultcheck.Upstream). Each minute is one phase:
//  1. traffic under D1 faults (worker/js/faults): storms of one key over REST and MCP across the isolates,
//     distinct keys over REST and MCP, later duplicates of old keys, on a fast, a slow and a failing tool;
//  2. midway, kill -9 of the Miniflare process (and workerd with it) and a restart on the same D1 file;
//  3. faults off, past the lease, every key not yet answered for good is retried until it is (200, or
//     the refunded 502 of the failing tool), then the cron sweep runs;
//  4. checks from the D1 file: the store's invariants, one net charge per completed key and none per
//     failed key, the balance, no record in progress past its lease.
//
// Every answer must follow faultcheck's rule (200 or a retryable problem, never a 500); only requests in
// flight at a kill may fail at the transport. At the end it writes FAULTS.md at the repository root.
// The test fails when any check or answer breaks.
package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
	"github.com/toolgate/toolgate-go/worker/internal/faultcheck"
)

const (
	adminToken  = "soak-admin-token"
	callerID    = "soak"
	creditCents = 1_000_000 // 10,000.00 USD
	priceCents  = 5
	lease       = 2 * time.Second
	loops       = 4 // traffic goroutines; a storm adds its own
	stormSize   = 8 // 6 over REST, 2 over MCP
	maxActions  = 3000
)

var (
	faults  = edgetest.Faults{BeforeRate: 0.05, AfterRate: 0.05, LatencyMs: 10}
	workers = []string{"w0", "w1", "w2"}
	client  = &http.Client{Timeout: 30 * time.Second}
)

// keyInfo is one idempotency key the soak used: its tool, its input and whether it was answered for good.
type keyInfo struct {
	tool  string
	body  string
	final bool
}

// soak is the run's state: the current Miniflare process, the keys used and the figures for FAULTS.md.
type soak struct {
	t    *testing.T
	opts edgetest.Options

	mu              sync.Mutex
	edge            *edgetest.Edge
	bases           []string
	serving         bool
	epoch           int // +1 per kill
	apiKey          string
	keys            map[string]*keyInfo
	order           []string // keys in creation order
	outcomes        map[string]int
	broken          []string
	faultsSum       edgetest.FaultStats
	restarts        int
	checks          int
	drained         int
	stranded        int
	strandedCharged int
	doubles         int // the most any check found
	nextKey         int
}

// TestSoak runs SOAK_MINUTES phases (see the package doc) and fails on any answer outside the rule,
// any broken invariant, double charge, stranded record or wrong balance.
func TestSoak(t *testing.T) {
	minutes := 5
	if v := os.Getenv("SOAK_MINUTES"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "SOAK_MINUTES")
		minutes = n
	}
	require.True(t, minutes >= 1 && minutes <= 30, "SOAK_MINUTES must be 1..30, got %d", minutes)
	up := faultcheck.NewUpstream()
	t.Cleanup(up.Close)

	s := &soak{t: t, keys: map[string]*keyInfo{}, outcomes: map[string]int{}}
	s.opts = edgetest.Options{
		Workers:       workers,
		MigrationsDir: "store/sqlstore/migrations",
		PersistDir:    t.TempDir(),
		Vars:          map[string]string{"TOOLS": up.Tools(lease.String(), "3s"), "ADMIN_TOKEN": adminToken},
		Faults:        &edgetest.Faults{Disabled: true},
	}
	s.start()
	s.apiKey = s.newCaller()
	began := time.Now()
	t.Cleanup(func() { s.writeReport(up, minutes, time.Since(began)) })

	for phase := 1; phase <= minutes; phase++ {
		end := began.Add(time.Duration(phase) * time.Minute)
		s.phase(phase, end.Add(-15*time.Second))
		s.drainAndCheck(up) // on a failed check, the soak goes on: FAULTS.md gets every phase's figures
	}
}

// start starts (or restarts, on the same D1 file) the Miniflare process.
func (s *soak) start() {
	e := edgetest.Start(s.t, s.opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.edge, s.serving = e, true
	s.bases = nil
	for _, w := range workers {
		s.bases = append(s.bases, e.URL(w))
	}
}

func (s *soak) newCaller() string {
	t := s.t
	res, body := s.post(s.bases[0]+"/v1/admin/callers", adminToken, fmt.Sprintf(`{"id":%q,"name":"soak"}`, callerID), nil)
	require.Equal(t, http.StatusCreated, res.StatusCode, string(body))
	var created struct{ Key string }
	require.NoError(t, json.Unmarshal(body, &created))
	res, body = s.post(s.bases[0]+"/v1/admin/credits", adminToken, fmt.Sprintf(
		`{"caller":%q,"amount":"%d.%02d","currency":"USD","reference":"soak-credit"}`, callerID, creditCents/100, creditCents%100), nil)
	require.Equal(t, http.StatusCreated, res.StatusCode, string(body))
	return created.Key
}

func (s *soak) post(url, key, body string, hdr map[string]string) (*http.Response, []byte) {
	res, b, err := send(url, key, body, hdr)
	require.NoError(s.t, err)
	return res, b
}

func send(url, key, body string, hdr map[string]string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, b, err
}

// phase runs traffic under faults until trafficEnd, with one kill and restart midway, and adds the
// faults it injected to the totals.
func (s *soak) phase(n int, trafficEnd time.Time) {
	t := s.t
	ctx := context.Background()
	f := faults
	f.Seed = int64(n * 100)
	require.NoError(t, s.edge.SetFaults(ctx, true, f))
	killAt := time.Now().Add(time.Until(trafficEnd) / 2)

	var wg sync.WaitGroup
	for l := 0; l < loops; l++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.traffic(rand.New(rand.NewPCG(uint64(n), uint64(l))), trafficEnd)
		}()
	}
	time.Sleep(time.Until(killAt))
	s.addFaults() // the counts die with the isolates
	s.mu.Lock()
	s.serving = false
	s.epoch++
	edge := s.edge
	s.mu.Unlock()
	require.NoError(t, edge.Kill(), "kill -9 the Miniflare process group")
	s.start()
	s.mu.Lock()
	s.restarts++
	s.mu.Unlock()
	require.NoError(t, s.edge.SetFaults(ctx, true, f))
	wg.Wait()
	s.addFaults()
	require.NoError(t, s.edge.SetFaults(ctx, false, edgetest.Faults{}))
	t.Logf("phase %d: traffic done, %d keys so far, outcomes %v", n, len(s.keys), s.outcomes)
}

func (s *soak) addFaults() {
	st, err := s.edge.FaultStats(context.Background())
	if err != nil {
		s.fail("fault stats: %v", err)
		return
	}
	s.mu.Lock()
	s.faultsSum = s.faultsSum.Add(st)
	s.mu.Unlock()
}

// traffic is one traffic loop: bounded in actions and in time.
func (s *soak) traffic(rng *rand.Rand, end time.Time) {
	sid := ""
	for i := 0; i < maxActions && time.Now().Before(end); i++ {
		s.mu.Lock()
		serving, bases, epoch := s.serving, s.bases, s.epoch
		s.mu.Unlock()
		if !serving {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		base := bases[rng.IntN(len(bases))]
		switch r := rng.IntN(100); {
		case r < 15: // a storm of one new key: REST and MCP over every isolate at once
			key := s.newKey(rng)
			var wg sync.WaitGroup
			for j := 0; j < stormSize; j++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if j < stormSize-2 {
						s.rest(bases[j%len(bases)], epoch, key)
					} else {
						var sid string
						s.mcp(bases[j%len(bases)], epoch, &sid, key)
					}
				}()
			}
			wg.Wait()
		case r < 55:
			s.rest(base, epoch, s.newKey(rng))
		case r < 80:
			s.mcp(base, epoch, &sid, s.newKey(rng))
		default: // a late duplicate of an older key
			if key := s.oldKey(rng); key != "" {
				s.rest(base, epoch, key)
			}
		}
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
	}
}

// newKey registers a new key on a tool: echo (60%), slow (25%) or fail (15%).
func (s *soak) newKey(rng *rand.Rand) string {
	tool, body := "echo", ""
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextKey++
	key := fmt.Sprintf("soak-%d", s.nextKey)
	switch r := rng.IntN(100); {
	case r < 60:
		body = fmt.Sprintf(`{"k":%q}`, key)
	case r < 85:
		tool, body = "slow", fmt.Sprintf(`{"k":%q,"ms":%d}`, key, 100+rng.IntN(1400))
	default:
		tool, body = "fail", fmt.Sprintf(`{"k":%q}`, key)
	}
	s.keys[key] = &keyInfo{tool: tool, body: body}
	s.order = append(s.order, key)
	return key
}

func (s *soak) oldKey(rng *rand.Rand) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.order) == 0 {
		return ""
	}
	return s.order[rng.IntN(len(s.order))]
}

// rest calls key's tool over REST on base (a URL of the process of epoch) and records the outcome. It
// reports whether the answer is final.
func (s *soak) rest(base string, epoch int, key string) bool {
	s.mu.Lock()
	k := s.keys[key]
	s.mu.Unlock()
	res, body, err := send(base+"/v1/tools/"+k.tool+"/call", s.apiKey, k.body, map[string]string{"Idempotency-Key": key})
	if err != nil {
		s.transportError(epoch, key, "rest", err)
		return false
	}
	name, err := faultcheck.Outcome(res.StatusCode, res.Header, body)
	final := res.StatusCode == http.StatusOK || (k.tool == "fail" && name == "502 refunded")
	s.record("rest "+name, final, key, err)
	return final
}

// mcp calls key's tool over MCP (initializing a session in *sid when needed) and records the outcome.
func (s *soak) mcp(base string, epoch int, sid *string, key string) {
	s.mu.Lock()
	k := s.keys[key]
	s.mu.Unlock()
	hdr := map[string]string{"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
	if *sid == "" {
		res, body, err := send(base+"/mcp", s.apiKey, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{
			"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"soak","version":"1"}}}`, hdr)
		if err != nil {
			s.transportError(epoch, "", "mcp initialize", err)
			return
		}
		if res.StatusCode != http.StatusOK || res.Header.Get("Mcp-Session-Id") == "" {
			name, err := faultcheck.MCPOutcome(res.StatusCode, res.Header, body)
			s.record("mcp initialize: "+name, false, "", err)
			return
		}
		*sid = res.Header.Get("Mcp-Session-Id")
		s.record("mcp initialize: ok", false, "", nil)
	}
	hdr["Mcp-Session-Id"] = *sid
	msg := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":%q,"arguments":%s,
		"_meta":{"io.toolgate/idempotency-key":%q}}}`, k.tool, k.body, key)
	res, body, err := send(base+"/mcp", s.apiKey, msg, hdr)
	if err != nil {
		s.transportError(epoch, key, "mcp", err)
		return
	}
	name, err := faultcheck.MCPOutcome(res.StatusCode, res.Header, body)
	final := strings.HasPrefix(name, "mcp ok") || (k.tool == "fail" && name == "mcp isError 502 refunded")
	s.record(name, final, key, err)
}

func (s *soak) record(outcome string, final bool, key string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outcomes[outcome]++
	if key != "" {
		s.keys[key].final = final // the latest answer decides: a late duplicate of a failed key runs it again
	}
	if err != nil && len(s.broken) < 50 {
		s.broken = append(s.broken, fmt.Sprintf("%s: %v", key, err))
	}
	if err != nil {
		s.t.Errorf("%s: %v", key, err)
	}
}

// transportError records a request (on key, if any) that got no answer: expected only when a kill
// happened while it was in flight.
func (s *soak) transportError(epoch int, key, what string, err error) {
	s.mu.Lock()
	killed := epoch != s.epoch || !s.serving
	s.mu.Unlock()
	if killed {
		s.record("killed in flight (kill -9)", false, key, nil)
		return
	}
	s.record("transport error", false, key, fmt.Errorf("%s %s: %w", what, key, err))
}

func (s *soak) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	if len(s.broken) < 50 {
		s.broken = append(s.broken, msg)
	}
	s.t.Error(msg)
}

// drainAndCheck waits past the lease with faults off, retries every key not answered for good until it
// is, runs the cron sweep and checks the money from the D1 file.
func (s *soak) drainAndCheck(up *faultcheck.Upstream) {
	t := s.t
	ctx := context.Background()
	time.Sleep(lease + 500*time.Millisecond)
	var open []string
	s.mu.Lock()
	for _, key := range s.order {
		if !s.keys[key].final {
			open = append(open, key)
		}
	}
	s.mu.Unlock()
	s.mu.Lock()
	bases, epoch := s.bases, s.epoch
	s.mu.Unlock()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, key := range open {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for attempt := 0; attempt < 15; attempt++ {
				if s.rest(bases[i%len(bases)], epoch, key) {
					s.mu.Lock()
					s.drained++
					s.mu.Unlock()
					return
				}
				time.Sleep(time.Second)
			}
			s.fail("%s: not answered for good after 15 retries without faults", key)
		}()
	}
	wg.Wait()
	require.NoError(t, s.edge.Scheduled(ctx, "w0", "*/15 * * * *"), "cron sweep")

	db := edgetest.OpenD1File(t, s.opts.PersistDir)
	money, err := faultcheck.CheckMoney(ctx, db, time.Now())
	s.mu.Lock()
	s.checks++
	s.mu.Unlock()
	if err != nil {
		s.fail("invariants after %d keys: %v", len(s.keys), err)
		return
	}
	s.mu.Lock()
	s.doubles, s.stranded = max(s.doubles, money.DoubleCharges), max(s.stranded, money.Stranded)
	s.strandedCharged = max(s.strandedCharged, money.StrandedCharged)
	s.mu.Unlock()
	if money.DoubleCharges != 0 || money.Stranded != 0 {
		s.fail("check %d: double charges %d, stranded records %d (%d still charged)", s.checks, money.DoubleCharges, money.Stranded, money.StrandedCharged)
	}
	paid := 0
	s.mu.Lock()
	keys := append([]string(nil), s.order...)
	s.mu.Unlock()
	for _, key := range keys {
		k := s.keys[key]
		want := faultcheck.KeyMoney{Status: "completed", Net: 1}
		if k.tool == "fail" {
			want = faultcheck.KeyMoney{Status: "failed", Net: 0}
		} else {
			paid++
		}
		if got := money.Keys[engine.ScopedKey(callerID, k.tool, key)]; got != want {
			s.fail("%s (%s): record %+v, want %+v", key, k.tool, got, want)
		}
		if n := up.Executions("/"+k.tool, key); n < 1 {
			s.fail("%s (%s): the upstream never ran it", key, k.tool)
		}
	}
	var bal int64
	require.NoError(t, db.QueryRowContext(ctx, `SELECT balance FROM balances WHERE caller = ? AND currency = 'USD'`, callerID).Scan(&bal))
	if want := int64(creditCents - priceCents*paid); bal != want {
		s.fail("balance %d, want %d (%d paid keys)", bal, want, paid)
	}
	require.NoError(t, db.Close())
	t.Logf("check %d: %d keys (%d retried after the phase), invariants hold, balance %d", s.checks, len(keys), len(open), bal)
}

// writeReport writes FAULTS.md at the repository root.
func (s *soak) writeReport(up *faultcheck.Upstream, minutes int, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	result := "PASS"
	if s.t.Failed() {
		result = "FAIL"
	}
	fmt.Fprintf(&b, "# FAULTS: soak of the worker under injected D1 faults and crashes\n\n")
	fmt.Fprintf(&b, "Written by `make soak` (worker/soak/soak_test.go; `SOAK_MINUTES=%d make soak`) on %s, %s.\n",
		minutes, time.Now().UTC().Format("2006-01-02 15:04 MST"), took.Round(time.Second))
	fmt.Fprintf(&b, "**Result: %s.**\n\n", result)
	fmt.Fprintf(&b, "Setup: 3 isolates (one Miniflare process, one D1 file) on 127.0.0.1; %d traffic loops plus storms of %d "+
		"(6 REST, 2 MCP) per key; tools echo, slow (100–1500 ms) and fail (always 500) at 0.05 USD, lease %s, timeout 3s. "+
		"Each minute: traffic under faults (before %.0f%%, after commit %.0f%%, latency 0–%d ms per D1 call), a kill -9 of "+
		"the Miniflare process group midway and a restart on the same D1 file, then faults off, every open key retried, "+
		"the cron sweep, and the checks from the D1 file.\n\n",
		loops, stormSize, lease, faults.BeforeRate*100, faults.AfterRate*100, faults.LatencyMs)

	fmt.Fprintf(&b, "## Requests by outcome\n\n| outcome | requests |\n|---|---:|\n")
	names := make([]string, 0, len(s.outcomes))
	total := 0
	for n, c := range s.outcomes {
		names = append(names, n)
		total += c
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "| %s | %d |\n", n, s.outcomes[n])
	}
	fmt.Fprintf(&b, "| **total** | **%d** |\n\n", total)
	fmt.Fprintf(&b, "`rest 503`/`409`: problem+json with Retry-After; `rest 502 refunded`: the failing tool, refunded "+
		"(`not refunded`: the refund's write was lost, the answer says so and asks for a retry, which inherits the charge); "+
		"`mcp isError N`: the same problem as a tool result; `mcp http 503`: the store failed during authentication. "+
		"Transport errors are allowed only for requests in flight at a kill.\n\n")

	f := s.faultsSum
	fmt.Fprintf(&b, "## Faults injected (D1 calls: statements or batches)\n\n| kind | count |\n|---|---:|\n")
	fmt.Fprintf(&b, "| calls while faults were on | %d |\n| failed before D1 (nothing executed) | %d |\n"+
		"| failed after D1 executed (reply lost) | %d |\n| delayed (0–%d ms) | %d |\n| passed | %d |\n\n",
		f.Calls, f.Before, f.After, faults.LatencyMs, f.Delayed, f.Passed)
	fmt.Fprintf(&b, "(Counted per isolate up to each kill and after each restart; calls between the last count and a kill are not counted.)\n\n")

	extra, multi, failExecs, failKeys := 0, 0, 0, 0
	for key, k := range s.keys {
		n := up.Executions("/"+k.tool, key)
		if k.tool == "fail" {
			failKeys++
			failExecs += n
			continue
		}
		if n > 1 {
			multi++
			extra += n - 1
		}
	}
	fmt.Fprintf(&b, "## Money and records\n\n| figure | value |\n|---|---:|\n")
	fmt.Fprintf(&b, "| idempotency keys | %d |\n| keys retried after their phase (faults off) | %d |\n", len(s.keys), s.drained)
	fmt.Fprintf(&b, "| kill -9 and restarts | %d |\n| invariant checks run (one per phase) | %d |\n", s.restarts, s.checks)
	fmt.Fprintf(&b, "| double charges (most found by a check) | %d |\n", s.doubles)
	fmt.Fprintf(&b, "| stranded records: in progress past lease, after a sweep (most found by a check) | %d (%d still charged) |\n", s.stranded, s.strandedCharged)
	fmt.Fprintf(&b, "| paid keys executed more than once by the upstream | %d (%d extra executions) |\n", multi, extra)
	fmt.Fprintf(&b, "| failing-tool keys / their executions (each retry re-executes, refunded) | %d / %d |\n\n", failKeys, failExecs)
	fmt.Fprintf(&b, "A key counts as answered for good on a 200, or for the failing tool on a 502 that says it was "+
		"refunded; every other key is retried after its phase with faults off until it is.\n\n")
	fmt.Fprintf(&b, "Every check: `CheckInvariants` (Σ entries = balance, the charge invariant), each paid key completed "+
		"with charges − refunds = 1, each failing-tool key failed with 0, the balance = credit − 0.05 × paid keys, "+
		"and no record in progress past its lease. An upstream runs a key again only after a takeover (a lost "+
		"write or a kill left the record in progress past its lease); the upstream receives the same `tg-` key each time. "+
		"A record stranded in progress (its owner was killed, or lost its final writes and ran out of retries) is "+
		"settled by the cron sweep once its lease is past: failed first, so its stale owner is fenced out, then any "+
		"charge it holds is refunded; a retry of the key executes again.\n")
	if len(s.broken) > 0 {
		fmt.Fprintf(&b, "\n## Broken (first %d)\n\n", len(s.broken))
		for _, m := range s.broken {
			fmt.Fprintf(&b, "- %s\n", m)
		}
	}
	path := filepath.Join(edgetest.RepoRoot(s.t), "FAULTS.md")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		s.t.Errorf("write %s: %v", path, err)
		return
	}
	s.t.Logf("wrote %s:\n%s", path, b.String())
}
