//go:build !js

package sqlite_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
)

func TestMain(m *testing.M) {
	storetest.MaybeChild(func(path string) (store.Store, error) {
		db, err := sqlite.Open(path)
		if err != nil {
			return nil, err
		}
		return sqlstore.New(db), nil
	})
	os.Exit(m.Run())
}

// TestProcessRace: 8 OS processes race one key on one SQLite file.
func TestProcessRace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, _ := setup(t, dir)
	storetest.ProcessRace(t, s, filepath.Join(dir, "toolgate.db"), 8)
}
