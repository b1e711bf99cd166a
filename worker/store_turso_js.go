//go:build js && wasm && turso

package main

import (
	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/libsql"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/worker/internal/bridge"
)

// openStore opens Turso (libSQL over HTTP) when TURSO_DATABASE_URL is set,
// and the D1 binding DB otherwise. The schema must exist: apply it with
// `go run ./worker -migrate -db "$TURSO_DATABASE_URL"` (see README).
func openStore(s Settings) (store.Store, error) {
	var (
		db  store.DbClient
		err error
	)
	if s.TursoURL != "" {
		db, err = libsql.Open(s.TursoURL, s.TursoToken)
	} else {
		db = bridge.OpenD1("DB")
	}
	if err != nil {
		return nil, err
	}
	return sqlstore.New(&store.CountingClient{Inner: db}), nil
}
