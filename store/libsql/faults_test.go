//go:build !js

package libsql_test

import (
	"testing"
	"time"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
)

// TestConformanceUnderLatencyHTTP runs the conformance suite over HTTP with
// injected latency on half the calls. Errors are left to the fault storms:
// the suite asserts exact outcomes and round trips, which a lost reply
// changes.
func TestConformanceUnderLatencyHTTP(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, storetest.Harness{New: func(tb storetest.TB) (store.Store, *store.CountingClient) {
		s, rt, srv := setupHTTP(tb, t.TempDir())
		t.Cleanup(func() { srv.Close() })
		rt.Inner = storetest.NewFaultClient(rt.Inner, storetest.FaultConfig{Seed: 3, LatencyRate: 0.5, MaxLatency: 2 * time.Millisecond})
		return s, rt
	}})
}

// TestFaultStormsHTTP runs the fault storms on libSQL over HTTP, which does
// not batch: claim and charge are two round trips, each faulted on its own.
func TestFaultStormsHTTP(t *testing.T) {
	t.Parallel()
	storetest.ExerciseFaults(t, storetest.FaultHarness{New: func(tb storetest.TB, cfg storetest.FaultConfig) (store.Store, *storetest.FaultClient) {
		_, rt, srv := setupHTTP(tb, t.TempDir())
		t.Cleanup(func() { srv.Close() })
		fc := storetest.NewFaultClient(rt.Inner, cfg)
		return sqlstore.New(fc), fc
	}})
}
