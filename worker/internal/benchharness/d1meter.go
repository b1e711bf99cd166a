//go:build !js

package benchharness

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
)

// d1Meter is the bench-only entry that MeterD1 puts in front of a worker (see d1meter.mjs).
//
//go:embed d1meter.mjs
var d1Meter []byte

// MeterD1 copies the worker in src (an edgetest BuildDir: toolgate's shim with app.wasm, or the JS
// reference) into dst with a D1 meter in front of it: dst/worker.mjs counts the D1 calls and statements
// the worker makes and delays each call by the BENCH_D1_RTT_MS var (see D1 and SetD1RTT). The worker
// itself becomes dst/inner.mjs; src is left as is. It returns an error if a file cannot be copied.
func MeterD1(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		to := e.Name()
		if to == "worker.mjs" {
			to = "inner.mjs"
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, to)); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dst, "worker.mjs"), d1Meter, 0o644)
}

// D1Stats counts what one isolate's metered D1 binding passed on since the isolate started.
type D1Stats struct {
	// RTTMs is the delay added to every D1 call, in milliseconds.
	RTTMs float64 `json:"rttMs"`
	// Calls is the number of D1 round trips: one per statement run on its own, one per batch.
	Calls int `json:"calls"`
	// Statements is the number of SQL statements, those in batches included.
	Statements int `json:"statements"`
	// Batches is the number of batches.
	Batches int `json:"batches"`
}

// Sub returns s minus o, counts only (RTTMs stays s's).
func (s D1Stats) Sub(o D1Stats) D1Stats {
	return D1Stats{RTTMs: s.RTTMs, Calls: s.Calls - o.Calls, Statements: s.Statements - o.Statements, Batches: s.Batches - o.Batches}
}

// D1 returns the D1 counts of the metered worker at base (http://127.0.0.1:port), summed over bases
// when there are several. It returns an error if a worker does not answer 200 with the counts, e.g.
// when it runs without MeterD1's entry.
func D1(bases ...string) (D1Stats, error) {
	return d1Request(http.MethodGet, nil, bases)
}

// SetD1RTT sets the delay every metered worker at bases adds to each D1 call. It returns an error if a
// worker does not answer 200.
func SetD1RTT(ms int, bases ...string) error {
	_, err := d1Request(http.MethodPost, []byte(fmt.Sprintf(`{"rttMs":%d}`, ms)), bases)
	return err
}

func d1Request(method string, body []byte, bases []string) (D1Stats, error) {
	var sum D1Stats
	for _, base := range bases {
		req, err := http.NewRequest(method, base+"/_bench/d1", bytes.NewReader(body))
		if err != nil {
			return D1Stats{}, err
		}
		res, err := Client.Do(req)
		if err != nil {
			return D1Stats{}, fmt.Errorf("d1 meter of %s: %w", base, err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return D1Stats{}, fmt.Errorf("d1 meter of %s: %w", base, err)
		}
		if res.StatusCode != http.StatusOK {
			return D1Stats{}, fmt.Errorf("d1 meter of %s: %s: %s", base, res.Status, b)
		}
		var s D1Stats
		if err := json.Unmarshal(b, &s); err != nil {
			return D1Stats{}, fmt.Errorf("d1 meter of %s: %w", base, err)
		}
		sum.RTTMs = s.RTTMs
		sum.Calls += s.Calls
		sum.Statements += s.Statements
		sum.Batches += s.Batches
	}
	return sum, nil
}
