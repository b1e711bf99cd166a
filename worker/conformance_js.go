//go:build js && wasm && conformance

package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/d1"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
	"github.com/toolgate/toolgate-go/worker/internal/bridge"
)

// The test build (-tags conformance) serves the store conformance suite
// against the real D1 binding inside workerd. Each case starts from an
// empty schema, so this build must never see a production database.
func init() {
	extraRoutes = append(extraRoutes, func(mux *http.ServeMux) {
		mux.HandleFunc("POST /_test/d1-conformance", runD1Conformance)
	})
}

func runD1Conformance(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// ?client=bridge tests the DbClient the worker uses in production;
	// the default tests the store/d1 adapter (syumai's driver).
	var db store.DbClient = bridge.OpenD1("DB")
	if r.URL.Query().Get("client") != "bridge" {
		c, err := d1.Open("DB")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		db = c
	}
	// The header says which path ClaimCharge took (the suite accepts both):
	// the bridge's client must batch, store/d1 over database/sql cannot.
	serveConformance(ctx, w, db, "Toolgate-D1-Batch")
}

// serveConformance runs the suite on db, each case from an empty schema,
// and answers the results as JSON, with batchHeader saying whether db
// batches.
func serveConformance(ctx context.Context, w http.ResponseWriter, db store.DbClient, batchHeader string) {
	_, batches := store.BatcherOf(db)
	w.Header().Set(batchHeader, strconv.FormatBool(batches))
	results := storetest.RunAll(storetest.Harness{New: func(t storetest.TB) (store.Store, *store.CountingClient) {
		require.NoError(t, resetSchema(ctx, db))
		rt := &store.CountingClient{Inner: db}
		return sqlstore.New(rt), rt
	}})
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(results)
}

// resetSchema drops every view and table the migrations made, views first
// (their triggers and indexes go with them; read from sqlite_master, so a
// new migration's are dropped too; a view left over a dropped table breaks
// the next migration's ALTER TABLE) and migrates. SQLite's and D1's own
// tables (sqlite_*, _cf_*) stay.
func resetSchema(ctx context.Context, db store.DbClient) error {
	rows, err := db.Query(ctx, `SELECT type, name FROM sqlite_master WHERE type IN ('view', 'table')
		AND name NOT LIKE 'sqlite\_%' ESCAPE '\' AND name NOT LIKE '\_cf\_%' ESCAPE '\' ORDER BY type = 'table'`)
	if err != nil {
		return err
	}
	for _, r := range rows {
		kind, _ := r[0].(string)
		name, _ := r[1].(string)
		if _, err := db.Exec(ctx, `DROP `+strings.ToUpper(kind)+` IF EXISTS "`+strings.ReplaceAll(name, `"`, `""`)+`"`); err != nil {
			return err
		}
	}
	return sqlstore.Migrate(ctx, db)
}
