//go:build js && wasm && !turso

package main

import (
	"errors"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/d1"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

// openStore opens the D1 binding DB. The D1 build carries no libSQL client
// (it would add about 1.6 MB gzip); build with -tags turso for Turso.
func openStore(s Settings) (store.Store, error) {
	if s.TursoURL != "" {
		return nil, errors.New("TURSO_DATABASE_URL is set, but this is the D1 build: deploy the Turso build (make build-turso)")
	}
	db, err := d1.Open("DB")
	if err != nil {
		return nil, err
	}
	return sqlstore.New(&store.CountingClient{Inner: db}), nil
}
