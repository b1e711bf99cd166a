//go:build js && wasm && conformance

package main

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
	"github.com/toolgate/toolgate-go/worker/internal/bridge"
)

// The test build also runs the fault storms (storetest.FaultCases) against
// the real D1 binding, through the bridge's client (the one production
// uses) wrapped in a storetest.FaultClient.
func init() {
	extraRoutes = append(extraRoutes, func(mux *http.ServeMux) {
		mux.HandleFunc("POST /_test/d1-faults", runD1Faults)
	})
}

func runD1Faults(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var db store.DbClient = bridge.OpenD1("DB")
	_, batches := store.BatcherOf(db)
	w.Header().Set("Toolgate-D1-Batch", strconv.FormatBool(batches))
	results := storetest.RunAllFaults(storetest.FaultHarness{New: func(t storetest.TB, cfg storetest.FaultConfig) (store.Store, *storetest.FaultClient) {
		require.NoError(t, resetSchema(ctx, db))
		fc := storetest.NewFaultClient(db, cfg)
		return sqlstore.New(fc), fc
	}})
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(results)
}
