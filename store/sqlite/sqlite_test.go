//go:build !js

package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
)

// setup opens a fresh, migrated SQLite file and returns a counting client.
func setup(t storetest.TB, dir string) (*sqlstore.Store, *store.CountingClient) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(dir, "toolgate.db"))
	require.NoError(t, err)
	require.NoError(t, sqlstore.Migrate(context.Background(), db))
	rt := &store.CountingClient{Inner: db}
	return sqlstore.New(rt), rt
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, storetest.Harness{New: func(tb storetest.TB) (store.Store, *store.CountingClient) {
		return setup(tb, t.TempDir())
	}})
}

// TestBatches pins that SQLite claims and charges in one round trip (the
// conformance suite accepts two from engines that cannot batch).
func TestBatches(t *testing.T) {
	t.Parallel()
	_, rt := setup(t, t.TempDir())
	require.True(t, rt.CanBatch())
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, storetest.Harness{New: func(tb storetest.TB) (store.Store, *store.CountingClient) {
		return setup(tb, b.TempDir())
	}})
}
