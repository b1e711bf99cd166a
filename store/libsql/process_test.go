//go:build !js

package libsql_test

import (
	"os"
	"testing"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/libsql"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
)

func TestMain(m *testing.M) {
	storetest.MaybeChild(func(url string) (store.Store, error) {
		db, err := libsql.Open(url, "")
		if err != nil {
			return nil, err
		}
		return sqlstore.New(db), nil
	})
	os.Exit(m.Run())
}

// TestProcessRace: 8 OS processes race one key through the real client
// against the Hrana test server.
func TestProcessRace(t *testing.T) {
	t.Parallel()
	s, _, srv := setupHTTP(t, t.TempDir())
	defer srv.Close()
	storetest.ProcessRace(t, s, srv.URL(), 8)
}
