// Package libsql opens a libSQL database (Turso) as a store.DbClient through
// github.com/tursodatabase/libsql-client-go, which speaks Hrana over HTTP.
//
// Every store operation is a single statement, so each is one HTTP round
// trip; the client's interactive transactions (one round trip per statement)
// are never used.
package libsql

import (
	"database/sql"
	"fmt"

	"github.com/tursodatabase/libsql-client-go/libsql"

	"github.com/toolgate/toolgate-go/store"
)

// Open returns a DbClient for url: libsql://, https:// or http:// (a remote
// server), or file: (a local file, when a "sqlite" or "sqlite3" driver is
// registered). authToken may be empty for servers that need none.
func Open(url, authToken string) (*store.SQLClient, error) {
	var opts []libsql.Option
	if authToken != "" {
		opts = append(opts, libsql.WithAuthToken(authToken))
	}
	conn, err := libsql.NewConnector(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("libsql: open: %w", err)
	}
	db := sql.OpenDB(conn)
	// Streams are per connection; a small pool keeps concurrent callers from
	// queueing behind one another without opening a stream per request.
	db.SetMaxIdleConns(8)
	return store.NewSQLClient("libsql", db), nil
}
