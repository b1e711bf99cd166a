//go:build !js

// Package benchharness builds the workers that the bridge tests and `make bench` run in workerd, and
// measures them: a bounded HTTP load generator and workerd's CPU time and RSS from /proc.
package benchharness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// shimFiles are the files of toolgate's shim that `make shim` puts into build/.
var shimFiles = []string{"worker.mjs", "goruntime.mjs", "bootseed.mjs", "wasm_exec.js"}

// BuildGo builds the Go main package pkg (relative to the repository root, e.g.
// "./worker/internal/bridge/testworker") into dir/app.wasm, next to a copy of toolgate's shim (after
// `make shim`), so that dir serves as edgetest.Options.BuildDir.
func BuildGo(dir, pkg string, goflags ...string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	shim := exec.Command("make", "--no-print-directory", "shim")
	shim.Dir = root
	if out, err := shim.CombinedOutput(); err != nil {
		return fmt.Errorf("make shim: %w\n%s", err, out)
	}
	for _, f := range shimFiles {
		if err := copyFile(filepath.Join(root, "build", f), filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	args := append(append([]string{"build"}, goflags...), "-o", filepath.Join(dir, "app.wasm"), pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return nil
}

// BuildReference copies the plain-JS reference worker (worker/js/reference) into dir, for
// edgetest.Options.BuildDir.
func BuildReference(dir string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	for _, f := range []string{"worker.mjs", "sql.mjs"} {
		if err := copyFile(filepath.Join(root, "worker", "js", "reference", f), filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	return nil
}

// RepoRoot returns the directory of the main module's go.mod.
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("benchharness: not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// Proc is a snapshot of one process from /proc.
type Proc struct {
	RSS int64         // resident set size, bytes
	CPU time.Duration // user + system time so far
}

// Workerd returns the snapshot of the workerd process that the Miniflare process minifarePID runs. It
// returns an error if there is none (or /proc cannot be read: Linux only).
func Workerd(miniflarePID int) (Proc, error) {
	pid, err := findChild(miniflarePID, "workerd")
	if err != nil {
		return Proc{}, err
	}
	return ReadProc(pid)
}

// WorkerdMainCPU returns the CPU time so far of the main thread of the workerd process that the
// Miniflare process miniflarePID runs, in nanoseconds (from /proc/<pid>/task/<pid>/schedstat; Linux
// only). The isolates run their JavaScript and wasm on that thread; V8's background compilers and
// the I/O threads are not in it.
func WorkerdMainCPU(miniflarePID int) (time.Duration, error) {
	pid, err := findChild(miniflarePID, "workerd")
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("benchharness: empty /proc/%d/task/%d/schedstat", pid, pid)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("benchharness: /proc/%d/task/%d/schedstat: %w", pid, pid, err)
	}
	return time.Duration(ns), nil
}

// findChild returns the first descendant of pid whose command name is name.
func findChild(pid int, name string) (int, error) {
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p))
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, c := range strings.Fields(string(b)) {
				child, _ := strconv.Atoi(c)
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", child))
				if strings.TrimSpace(string(comm)) == name {
					return child, nil
				}
				queue = append(queue, child)
			}
		}
	}
	return 0, fmt.Errorf("benchharness: no %s process under pid %d", name, pid)
}

// ReadProc reads pid's RSS (from /proc/pid/status) and CPU time (from /proc/pid/stat, in clock ticks
// of 10 ms).
func ReadProc(pid int) (Proc, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Proc{}, err
	}
	var p Proc
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			p.RSS = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Proc{}, err
	}
	// Fields after the parenthesised command: state is field 3, utime 14, stime 15.
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return Proc{}, fmt.Errorf("benchharness: short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	p.CPU = time.Duration(utime+stime) * 10 * time.Millisecond
	return p, nil
}

// Load describes a bounded closed-loop load: Concurrency workers send requests until N were sent or
// Duration passed, whichever comes first.
type Load struct {
	Concurrency int
	N           int
	Duration    time.Duration // zero means no time bound
	// NewRequest builds request i (0-based, unique across workers).
	NewRequest func(i int) (*http.Request, error)
	// OK reports whether a response counts as a success; nil means 2xx.
	OK func(res *http.Response, body []byte) bool
}

// Result summarises a Load run.
type Result struct {
	Requests  int
	Failures  int
	Statuses  map[int]int
	Elapsed   time.Duration
	Latencies []time.Duration // sorted
	FirstErr  string
}

// RPS returns successful requests per second.
func (r Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests-r.Failures) / r.Elapsed.Seconds()
}

// Percentile returns the p-th percentile latency (0 < p <= 100).
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.Latencies))*p/100+0.5) - 1
	return r.Latencies[min(max(i, 0), len(r.Latencies)-1)]
}

// Client is the HTTP client the load uses: keep-alive to loopback, enough idle connections.
var Client = &http.Client{
	Timeout:   60 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256, DisableCompression: true},
}

// Run runs l against ctx's deadline and returns the result.
func Run(ctx context.Context, l Load) Result {
	var (
		mu   sync.Mutex
		res  = Result{Statuses: map[int]int{}}
		next int
		wg   sync.WaitGroup
	)
	if l.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.Duration)
		defer cancel()
	}
	ok := l.OK
	if ok == nil {
		ok = func(res *http.Response, _ []byte) bool { return res.StatusCode/100 == 2 }
	}
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= l.N || ctx.Err() != nil {
			return 0, false
		}
		next++
		return next - 1, true
	}
	start := time.Now()
	for range l.Concurrency {
		wg.Go(func() {
			for {
				i, more := take()
				if !more {
					return
				}
				t0 := time.Now()
				status, good, errText := do(l, i, ok)
				d := time.Since(t0)
				mu.Lock()
				res.Requests++
				res.Latencies = append(res.Latencies, d)
				res.Statuses[status]++
				if !good {
					res.Failures++
					if res.FirstErr == "" {
						res.FirstErr = errText
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	sort.Slice(res.Latencies, func(a, b int) bool { return res.Latencies[a] < res.Latencies[b] })
	return res
}

func do(l Load, i int, ok func(*http.Response, []byte) bool) (status int, good bool, errText string) {
	req, err := l.NewRequest(i)
	if err != nil {
		return 0, false, err.Error()
	}
	res, err := Client.Do(req)
	if err != nil {
		return 0, false, err.Error()
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, false, err.Error()
	}
	if !ok(res, body) {
		return res.StatusCode, false, fmt.Sprintf("%s: %.300s", res.Status, body)
	}
	return res.StatusCode, true, ""
}
