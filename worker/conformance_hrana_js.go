//go:build js && wasm && conformance

package main

import (
	"net/http"

	"github.com/toolgate/toolgate-go/store/hrana"
	"github.com/toolgate/toolgate-go/worker/internal/bridge"
)

// The test build (-tags conformance) also serves the store conformance
// suite against libSQL through store/hrana on the bridge's fetch, the path
// the Turso build takes, at the Hrana server named by the TEST_HRANA_URL
// var. Each case starts from an empty schema: point it at a test server only.
func init() {
	extraRoutes = append(extraRoutes, func(mux *http.ServeMux) {
		mux.HandleFunc("POST /_test/hrana-conformance", runHranaConformance)
	})
}

func runHranaConformance(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	db, err := hrana.Open(bridge.Getenv(ctx, "TEST_HRANA_URL"), hrana.Options{SendFunc: bridge.Fetch})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	serveConformance(ctx, w, db, "Toolgate-Hrana-Batch")
}
