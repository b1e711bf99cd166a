//go:build !js

package libsql_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/libsql"
	"github.com/toolgate/toolgate-go/store/libsql/hranatest"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"

	_ "modernc.org/sqlite" // the "sqlite" driver that file: URLs need
)

// setupHTTP starts a Hrana test server on a fresh SQLite file and opens the
// real libsql-client-go against it over HTTP.
func setupHTTP(t storetest.TB, dir string) (*sqlstore.Store, *store.CountingClient, *hranatest.Server) {
	t.Helper()
	srv, err := hranatest.Start(filepath.Join(dir, "hrana.db"))
	require.NoError(t, err)
	db, err := libsql.Open(srv.URL(), "")
	require.NoError(t, err)
	require.NoError(t, sqlstore.Migrate(context.Background(), db))
	rt := &store.CountingClient{Inner: db}
	return sqlstore.New(rt), rt, srv
}

// TestDoesNotBatch pins that libSQL over HTTP claims and charges in two
// round trips: a transaction through libsql-client-go would cost one HTTP
// request per statement plus BEGIN and COMMIT.
func TestDoesNotBatch(t *testing.T) {
	t.Parallel()
	_, rt, srv := setupHTTP(t, t.TempDir())
	defer srv.Close()
	require.False(t, rt.CanBatch())
}

func TestConformanceHTTP(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, storetest.Harness{New: func(tb storetest.TB) (store.Store, *store.CountingClient) {
		s, rt, srv := setupHTTP(tb, t.TempDir())
		t.Cleanup(func() { srv.Close() })
		return s, rt
	}})
}

func TestConformanceFileURL(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, storetest.Harness{New: func(tb storetest.TB) (store.Store, *store.CountingClient) {
		path := filepath.Join(t.TempDir(), "file.db")
		db, err := libsql.Open("file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)", "")
		require.NoError(tb, err)
		require.NoError(tb, sqlstore.Migrate(context.Background(), db))
		rt := &store.CountingClient{Inner: db}
		return sqlstore.New(rt), rt
	}})
}

// TestOneHTTPRequestPerOperation checks that a claim is one HTTP pipeline
// on the critical path. The client also closes each pooled stream with a
// fire-and-forget pipeline, so n claims cost between n and 2n+1 requests.
func TestOneHTTPRequestPerOperation(t *testing.T) {
	t.Parallel()
	s, rt, srv := setupHTTP(t, t.TempDir())
	defer srv.Close()
	ctx := context.Background()
	const n = 20
	reqs, trips := srv.Requests(), rt.Count()
	for i := 0; i < n; i++ {
		_, err := s.Claim(ctx, store.ClaimParams{Key: fmt.Sprint("k", i), Owner: "A", Fingerprint: "fp", Now: storetestNow, Lease: lease})
		require.NoError(t, err)
	}
	require.Equal(t, int64(n), rt.Count()-trips)
	got := srv.Requests() - reqs
	require.GreaterOrEqual(t, got, int64(n))
	require.LessOrEqual(t, got, int64(2*n+1))
}

func BenchmarkStoreHTTP(b *testing.B) {
	storetest.Bench(b, storetest.Harness{New: func(tb storetest.TB) (store.Store, *store.CountingClient) {
		s, rt, srv := setupHTTP(tb, b.TempDir())
		b.Cleanup(func() { srv.Close() })
		return s, rt
	}})
}
