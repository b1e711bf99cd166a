//go:build js && wasm

package d1

import (
	"database/sql"
	"fmt"

	"github.com/syumai/workers/cloudflare/d1"

	"github.com/toolgate/toolgate-go/store"
)

// Open returns a DbClient over the D1 binding named binding (for example
// "DB"). It must be called while a request or scheduled event is being
// served, because bindings come from the runtime's env.
func Open(binding string) (*store.SQLClient, error) {
	c, err := d1.OpenConnector(binding)
	if err != nil {
		return nil, fmt.Errorf("d1: open binding %q: %w", binding, err)
	}
	return store.NewSQLClient("d1", sql.OpenDB(c)), nil
}
