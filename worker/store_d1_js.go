//go:build js && wasm && !turso

package main

import (
	"errors"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/worker/internal/bridge"
)

// openStore opens the D1 binding DB. The D1 build carries no libSQL client
// (store/hrana, about 20 KB gzip); build with -tags turso for Turso.
func openStore(s Settings) (store.Store, error) {
	if s.TursoURL != "" {
		return nil, errors.New("TURSO_DATABASE_URL is set, but this is the D1 build: deploy the Turso build (make build-turso)")
	}
	return sqlstore.New(&store.CountingClient{Inner: bridge.OpenD1("DB")}), nil
}
