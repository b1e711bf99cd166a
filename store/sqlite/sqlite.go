//go:build !js

package sqlite

import (
	"database/sql"
	"fmt"
	"net/url"

	"github.com/toolgate/toolgate-go/store"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Open opens (creating if needed) the SQLite file at path in WAL mode with
// a busy timeout, so several processes can share it. It does not migrate;
// see sqlstore.Migrate.
func Open(path string) (*store.SQLClient, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return store.NewTxSQLClient("sqlite", db), nil
}
