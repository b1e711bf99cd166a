//go:build js && wasm && turso

package main

import (
	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/hrana"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/worker/internal/bridge"
)

// openStore opens Turso (libSQL over HTTP) when TURSO_DATABASE_URL is set,
// and the D1 binding DB otherwise. The schema must exist: apply it with
// `go run ./worker -migrate -db "$TURSO_DATABASE_URL"` (see README).
//
// libSQL goes through store/hrana over the bridge's fetch: one HTTP request
// per statement or batch, no stream kept between calls, and never Go's
// js/wasm net/http transport, whose AbortController handling crosses
// requests (workerd kills the isolate for that) and costs about 1.2 MB gzip.
func openStore(s Settings) (store.Store, error) {
	if s.TursoURL == "" {
		return sqlstore.New(&store.CountingClient{Inner: bridge.OpenD1("DB")}), nil
	}
	db, err := hrana.Open(s.TursoURL, hrana.Options{AuthToken: s.TursoToken, SendFunc: bridge.Fetch})
	if err != nil {
		return nil, err
	}
	return sqlstore.New(&store.CountingClient{Inner: db}), nil
}
