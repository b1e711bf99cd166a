//go:build !js

// Package edgetest runs the compiled worker (build/app.wasm) inside workerd for end-to-end tests.
//
// Start launches worker/js/miniflare.mjs: one Miniflare process running several workers, each its own
// isolate on its own 127.0.0.1 port, all sharing one D1 database in a temp persist directory. Tests talk
// to the workers over HTTP and inspect the D1 SQLite file directly with OpenD1.
//
// It needs `npm ci` (node_modules) and fails the test, never skips it, when that is missing.
package edgetest

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite" // registers the "sqlite" driver for OpenD1
)

// Options configures Start. The zero value runs one worker "w0" with no vars, no migrations and a fresh
// D1 database.
type Options struct {
	// Workers names the workers to run, each a separate isolate with its own URL. Empty means ["w0"].
	Workers []string
	// Vars are string bindings given to every worker (as wrangler.toml [vars] and secrets would be).
	Vars map[string]string
	// WorkerVars overrides Vars for the named workers. Nil means no overrides.
	WorkerVars map[string]map[string]string
	// MigrationsDir holds *.sql migrations applied before the workers serve, recorded in d1_migrations as
	// wrangler does. Relative paths are from the repository root. Empty means none.
	MigrationsDir string
	// PersistDir is the D1 persist directory. Empty means a new t.TempDir().
	PersistDir string
	// ReadyTimeout bounds the wait for the workers to serve. Zero means 60s.
	ReadyTimeout time.Duration
	// BuildDir holds the worker to run (worker.mjs and app.wasm); empty
	// means <repo>/build. See BuildVariant.
	BuildDir string
	// Mode selects the shim's Go runtime for every worker: ModePersistent or ModePerRequest (the
	// GO_RUNTIME var; a GO_RUNTIME in Vars or WorkerVars still wins). Empty means $TOOLGATE_GO_RUNTIME,
	// else the shim's default: persistent for a bridge.Serve program.
	Mode string
	// Faults, when set, serves every worker through the test-only entry worker/js/faults/entry.mjs: the
	// shim with a D1 binding that injects faults as configured, and the routes GET /_faults/stats and
	// POST /_faults/config (see Edge.FaultStats and Edge.SetFaults). Nil means the plain shim, no faults.
	Faults *Faults
	// AssetsDir, when set, serves Workers static assets from this directory (relative to the repository
	// root) in front of every worker (on its URL and on EntryURL), with RunWorkerFirst as wrangler.toml's
	// run_worker_first. Empty means no assets.
	AssetsDir      string
	RunWorkerFirst []string
}

// Faults configures the D1 faults injected by worker/js/faults/entry.mjs. Each D1 call (one statement or
// one batch) that is eligible first waits up to LatencyMs, then fails before reaching D1 with probability
// BeforeRate, or executes and then fails (the lost reply) with probability AfterRate. Both failures throw
// the error D1 throws on a dropped connection, "D1_ERROR: Network connection lost.".
type Faults struct {
	// Seed seeds each isolate's PRNG (worker i uses Seed+i), so a run's decisions repeat.
	Seed int64
	// BeforeRate is the share of eligible calls that fail without executing (0 to 1).
	BeforeRate float64
	// AfterRate is the share of eligible calls that execute and then fail (0 to 1).
	AfterRate float64
	// LatencyMs is the maximum added latency per eligible call, uniform from 0; zero adds none.
	LatencyMs int
	// Match, a JavaScript regexp, limits faults to statements (or batches holding a statement) whose SQL
	// matches; empty means every call is eligible.
	Match string
	// Disabled starts the workers with faults off (calls pass through untouched); SetFaults turns them on.
	Disabled bool
}

// FaultStats counts what the fault-injecting D1 wrapper did, summed over the workers asked.
type FaultStats struct {
	// Calls is the number of eligible D1 calls made while faults were on.
	Calls int `json:"calls"`
	// Before is the number of calls failed before reaching D1.
	Before int `json:"before"`
	// After is the number of calls that executed and then failed (reply lost).
	After int `json:"after"`
	// Delayed is the number of calls given added latency.
	Delayed int `json:"delayed"`
	// Passed is the number of eligible calls that succeeded.
	Passed int `json:"passed"`
	// Held is the number of D1 calls waiting on a pause (see PauseD1) now.
	Held int `json:"held"`
	// HeldTotal is the number of D1 calls that waited on a pause, ever.
	HeldTotal int `json:"heldTotal"`
}

// Add returns the sum of s and o.
func (s FaultStats) Add(o FaultStats) FaultStats {
	return FaultStats{Calls: s.Calls + o.Calls, Before: s.Before + o.Before, After: s.After + o.After,
		Delayed: s.Delayed + o.Delayed, Passed: s.Passed + o.Passed, Held: s.Held + o.Held, HeldTotal: s.HeldTotal + o.HeldTotal}
}

// Go runtime modes of toolgate's shim (worker/js/shim/worker.mjs).
const (
	// ModePersistent runs one Go instance per isolate and dispatches every event into it.
	ModePersistent = "persistent"
	// ModePerRequest starts a new Go instance and runs main() for every event.
	ModePerRequest = "per-request"
)

// Edge is a running Miniflare process. Its methods are safe for concurrent use.
type Edge struct {
	// PersistDir is the D1 persist directory; it outlives Close.
	PersistDir string

	urls    map[string]string
	workers []string
	entry   string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	logs    *tailBuffer
	done    chan struct{} // closed when the process has exited
	close   sync.Once
}

// readyLine is the one line miniflare.mjs prints on stdout once every worker serves.
type readyLine struct {
	Ready bool              `json:"ready"`
	URLs  map[string]string `json:"urls"`
	Entry string            `json:"entry"`
}

// Start builds the worker (see Build), starts the workers and waits until they serve. It fails t if any
// step fails, and registers Close with t.Cleanup. On failure, the process's log is in the test output.
func Start(t testing.TB, opts Options) *Edge {
	t.Helper()
	skipIfShort(t)
	root := RepoRoot(t)
	if opts.BuildDir == "" {
		Build(t)
	}
	if opts.Mode == "" {
		opts.Mode = os.Getenv("TOOLGATE_GO_RUNTIME")
	}
	if len(opts.Workers) == 0 {
		opts.Workers = []string{"w0"}
	}
	if opts.PersistDir == "" {
		opts.PersistDir = t.TempDir()
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	config, err := json.Marshal(mfConfig(opts))
	require.NoError(t, err)

	e := &Edge{PersistDir: opts.PersistDir, workers: opts.Workers, logs: &tailBuffer{max: 256 << 10}, done: make(chan struct{})}
	e.cmd = exec.Command("node", filepath.Join("worker", "js", "miniflare.mjs"))
	e.cmd.Dir = root
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Kill reaches workerd (node's child) too
	e.cmd.Env = append(os.Environ(), "WRANGLER_SEND_METRICS=false", "CLOUDFLARE_CF_FETCH_ENABLED=false")
	e.cmd.Stderr = e.logs
	e.stdin, err = e.cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := e.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, e.cmd.Start(), "start node worker/js/miniflare.mjs")
	go func() { _ = e.cmd.Wait(); close(e.done) }()
	t.Cleanup(func() {
		e.Close()
		if t.Failed() {
			t.Logf("edgetest: miniflare/workerd log (tail):\n%s", e.Logs())
		}
	})

	// The config is the first stdin line; stdin then stays open: its EOF (our Close, or our death) stops
	// the process.
	_, err = e.stdin.Write(append(config, '\n'))
	require.NoError(t, err)

	ready := make(chan readyLine, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l readyLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Ready {
				ready <- l
			}
		}
	}()
	select {
	case l := <-ready:
		e.urls, e.entry = l.URLs, l.Entry
	case <-e.done:
		t.Fatalf("edgetest: miniflare.mjs exited before ready:\n%s", e.Logs())
	case <-time.After(opts.ReadyTimeout):
		t.Fatalf("edgetest: workers not ready after %s:\n%s", opts.ReadyTimeout, e.Logs())
	}
	return e
}

// mfConfig is the JSON config miniflare.mjs reads.
func mfConfig(opts Options) map[string]any {
	workers := make([]map[string]any, len(opts.Workers))
	for i, name := range opts.Workers {
		workers[i] = map[string]any{"name": name, "vars": opts.WorkerVars[name]}
	}
	vars := opts.Vars
	if opts.Mode != "" {
		vars = map[string]string{"GO_RUNTIME": opts.Mode}
		for k, v := range opts.Vars {
			vars[k] = v
		}
	}
	cfg := map[string]any{
		"workers":       workers,
		"vars":          vars,
		"d1Persist":     opts.PersistDir,
		"migrationsDir": opts.MigrationsDir,
	}
	if opts.BuildDir != "" {
		cfg["buildDir"] = opts.BuildDir
	}
	if opts.AssetsDir != "" {
		cfg["assets"] = map[string]any{"directory": opts.AssetsDir, "runWorkerFirst": opts.RunWorkerFirst}
	}
	if f := opts.Faults; f != nil {
		m := map[string]any{"seed": f.Seed, "beforeRate": f.BeforeRate, "afterRate": f.AfterRate,
			"latencyMs": f.LatencyMs, "enabled": !f.Disabled}
		if f.Match != "" {
			m["match"] = f.Match
		}
		cfg["faults"] = m
	}
	return cfg
}

// SetFaults switches every worker's D1 faults on or off at run time (off: calls pass through untouched)
// and sets f's rates, latency and match; a non-zero f.Seed restarts worker i's PRNG at Seed+i (f.Disabled
// is ignored). It returns an error if a worker does not answer 200, e.g. when the Edge was started
// without Options.Faults.
func (e *Edge) SetFaults(ctx context.Context, on bool, f Faults) error {
	for i, w := range e.workers {
		m := map[string]any{"enabled": on, "beforeRate": f.BeforeRate, "afterRate": f.AfterRate,
			"latencyMs": f.LatencyMs, "match": f.Match}
		if f.Seed != 0 {
			m["seed"] = f.Seed + int64(i)
		}
		body, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if _, err := e.faultsRequest(ctx, http.MethodPost, w, "/_faults/config", body); err != nil {
			return err
		}
	}
	return nil
}

// PauseD1 stalls (paused true) or releases every worker's D1: while paused, each D1 call waits in its own
// request's context until released, as a database that stops answering for a while (needs Options.Faults;
// works whether or not faults are enabled). FaultStats' Held and HeldTotal count the calls held.
func (e *Edge) PauseD1(ctx context.Context, paused bool) error {
	body, err := json.Marshal(map[string]any{"paused": paused})
	if err != nil {
		return err
	}
	for _, w := range e.workers {
		if _, err := e.faultsRequest(ctx, http.MethodPost, w, "/_faults/config", body); err != nil {
			return err
		}
	}
	return nil
}

// FaultStats returns the fault counts summed over every worker, since each isolate started (a restart
// of the process resets them). It returns an error if a worker does not answer 200.
func (e *Edge) FaultStats(ctx context.Context) (FaultStats, error) {
	var sum FaultStats
	for _, w := range e.workers {
		body, err := e.faultsRequest(ctx, http.MethodGet, w, "/_faults/stats", nil)
		if err != nil {
			return FaultStats{}, err
		}
		var out struct{ Stats FaultStats }
		if err := json.Unmarshal(body, &out); err != nil {
			return FaultStats{}, fmt.Errorf("fault stats of %s: %w", w, err)
		}
		sum = sum.Add(out.Stats)
	}
	return sum, nil
}

func (e *Edge) faultsRequest(ctx context.Context, method, worker, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.URL(worker)+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", method, path, worker, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", method, path, worker, err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s on %s: %s: %s", method, path, worker, res.Status, b)
	}
	return b, nil
}

// URL returns the base URL (http://127.0.0.1:port, no trailing slash) of the named worker. It panics if
// no such worker was started.
func (e *Edge) URL(worker string) string {
	u, ok := e.urls[worker]
	if !ok {
		panic(fmt.Sprintf("edgetest: no worker %q", worker))
	}
	return u
}

// EntryURL returns the URL of Miniflare's router (no trailing slash), which serves the first worker.
func (e *Edge) EntryURL() string { return e.entry }

// Scheduled runs the named worker's cron handler once, as the cron expression would. It returns an
// error if the handler failed or the request could not be made.
func (e *Edge) Scheduled(ctx context.Context, worker, cron string) error {
	u := e.entry + "/cdn-cgi/handler/scheduled?cron=" + url.QueryEscape(cron)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("MF-Route-Override", worker) // Miniflare's router dispatches to this worker
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("trigger scheduled: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("trigger scheduled: %s: %s", res.Status, body)
	}
	return nil
}

// OpenD1 opens the D1 database's SQLite file read-only, during or after the run, and closes it at the end
// of the test. It fails t unless the persist directory holds exactly one D1 database, which exists only
// once a worker or a migration has used D1.
func (e *Edge) OpenD1(t testing.TB) *sql.DB {
	t.Helper()
	return OpenD1File(t, e.PersistDir)
}

// OpenD1File is OpenD1 for a persist directory, e.g. one kept across several Starts or after Close.
func OpenD1File(t testing.TB, persistDir string) *sql.DB {
	t.Helper()
	path, err := D1File(persistDir)
	require.NoError(t, err)
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, db.Ping(), "open D1 file %s", path)
	return db
}

// D1File returns the path of the single D1 SQLite file under persistDir. It returns an error if there is
// none or more than one.
func D1File(persistDir string) (string, error) {
	// Layout (miniflare 4): <persist>/miniflare-D1DatabaseObject/<sha256 of the database id>.sqlite, next to
	// the Durable Object's own metadata.sqlite.
	files, err := filepath.Glob(filepath.Join(persistDir, "miniflare-D1DatabaseObject", "*.sqlite"))
	if err != nil {
		return "", err
	}
	var dbs []string
	for _, f := range files {
		if filepath.Base(f) != "metadata.sqlite" {
			dbs = append(dbs, f)
		}
	}
	if len(dbs) != 1 {
		return "", fmt.Errorf("edgetest: want 1 D1 database file under %s, found %d: %v", persistDir, len(dbs), dbs)
	}
	return dbs[0], nil
}

// PID returns the process id of the Miniflare process (node); workerd is its child.
func (e *Edge) PID() int { return e.cmd.Process.Pid }

// Kill ends the Miniflare process and workerd with SIGKILL (the whole process group: a crash, no clean
// shutdown) and waits for node to exit. The D1 file stays in PersistDir; Start again with the same
// PersistDir to serve it anew. It returns the error of the kill itself, if any.
func (e *Edge) Kill() error {
	err := syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	<-e.done
	return err
}

// Logs returns the tail of the process's stderr: Miniflare warnings, workerd output, worker console
// output and Go panics.
func (e *Edge) Logs() string { return e.logs.String() }

// LogMark returns the current end of the log, for LogsSince.
func (e *Edge) LogMark() int64 { return e.logs.mark() }

// LogsSince returns what the tail still holds of the log written after mark (all of it, unless more than
// the tail's size was written since).
func (e *Edge) LogsSince(mark int64) string { return e.logs.since(mark) }

// Close stops the workers and waits for the process to exit. It is idempotent; Start registers it with
// t.Cleanup, so tests call it only to stop early (e.g. before reading D1 after a clean shutdown).
func (e *Edge) Close() {
	e.close.Do(func() {
		_ = e.stdin.Close() // EOF: miniflare.mjs disposes Miniflare, which stops workerd
		select {
		case <-e.done:
			return
		case <-time.After(10 * time.Second):
		}
		_ = e.cmd.Process.Signal(syscall.SIGTERM) // same clean shutdown path
		select {
		case <-e.done:
		case <-time.After(5 * time.Second):
			_ = e.cmd.Process.Kill() // last resort: may orphan workerd
			<-e.done
		}
	})
}

var (
	buildOnce sync.Once
	buildErr  error
)

// Build runs `make build` once per test binary, so E2E tests always run the wasm of the current sources.
// It fails t with instructions if node_modules is missing or the build fails.
func Build(t testing.TB) {
	t.Helper()
	skipIfShort(t)
	root := RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "node_modules", "miniflare")); err != nil {
		t.Fatalf("edgetest: %s/node_modules/miniflare is missing: run `npm ci` in %s (E2E tests need it; they never skip)", root, root)
	}
	buildOnce.Do(func() {
		cmd := exec.Command("make", "--no-print-directory", "build")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("edgetest: make build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

var (
	rootOnce sync.Once
	root     string
	rootErr  error
)

// RepoRoot returns the directory of the main module's go.mod. It fails t if it cannot be found.
func RepoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		gomod := strings.TrimSpace(string(out))
		switch {
		case err != nil:
			rootErr = fmt.Errorf("edgetest: go env GOMOD: %w", err)
		case gomod == "" || gomod == os.DevNull:
			rootErr = errors.New("edgetest: not inside a Go module")
		default:
			root = filepath.Dir(gomod)
		}
	})
	require.NoError(t, rootErr)
	return root
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	max     int
	written int64 // bytes written so far, kept or not
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.written += int64(len(p))
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// since returns what is still kept of the output written after mark (a position from mark()).
func (b *tailBuffer) since(mark int64) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if keep := b.written - mark; keep < int64(len(s)) {
		s = s[len(s)-int(max(keep, 0)):]
	}
	return s
}

func (b *tailBuffer) mark() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.written
}

// BuildVariant builds the worker with extra build tags (for example
// "turso" or "conformance") into a temporary directory holding a copy of the
// generated shim, and returns that directory for Options.BuildDir.
func BuildVariant(t testing.TB, tags string) string {
	t.Helper()
	Build(t)
	root := RepoRoot(t)
	dir := t.TempDir()
	entries, err := os.ReadDir(filepath.Join(root, "build"))
	require.NoError(t, err)
	for _, e := range entries {
		if e.IsDir() || strings.HasSuffix(e.Name(), ".wasm") || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, "build", e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644))
	}
	cmd := exec.Command("go", "build", "-tags", tags, "-o", filepath.Join(dir, "app.wasm"), "./worker")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "build worker with tags %q: %s", tags, out)
	return dir
}

// skipIfShort skips t under `go test -short` (`make test-short`): the inner loop without Node, workerd or the wasm
// build. `make test` and CI never pass -short, so these tests always run there.
func skipIfShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("edgetest: workerd E2E test skipped in -short mode (make test runs it)")
	}
}
