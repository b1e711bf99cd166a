//go:build !js

package sqlite_test

import (
	"testing"
	"time"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
)

// TestConformanceUnderLatency runs the conformance suite with injected
// latency on half the calls. Errors are left to the fault storms: the suite
// asserts exact outcomes and round trips, which a lost reply changes.
func TestConformanceUnderLatency(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, storetest.Harness{New: func(tb storetest.TB) (store.Store, *store.CountingClient) {
		s, rt := setup(tb, t.TempDir())
		fc := storetest.NewFaultClient(rt.Inner, storetest.FaultConfig{Seed: 3, LatencyRate: 0.5, MaxLatency: 2 * time.Millisecond})
		rt.Inner = fc
		return s, rt
	}})
}

// TestFaultStorms runs the fault storms on SQLite, whose client batches:
// claim and charge are one transaction, faulted as a whole.
func TestFaultStorms(t *testing.T) {
	t.Parallel()
	storetest.ExerciseFaults(t, storetest.FaultHarness{New: func(tb storetest.TB, cfg storetest.FaultConfig) (store.Store, *storetest.FaultClient) {
		_, rt := setup(tb, t.TempDir())
		fc := storetest.NewFaultClient(rt.Inner, cfg)
		return sqlstore.New(fc), fc
	}})
}
