//go:build !js

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// These tests run the compiled wasm (build/app.wasm) inside workerd: two workers (separate isolates)
// sharing one D1 database, as in production. The edge is shared because each start costs seconds; the
// subtests run in order since they count on one D1 counter.
func TestE2ESmoke(t *testing.T) {
	t.Parallel()
	edge := edgetest.Start(t, edgetest.Options{Workers: []string{"w0", "w1"}})

	t.Run("healthz", func(t *testing.T) {
		for _, w := range []string{"w0", "w1"} {
			status, body := get(t, edge.URL(w)+"/healthz")
			require.Equal(t, http.StatusOK, status, body)
			require.JSONEq(t, `{"ok":true}`, body)
		}
	})

	t.Run("two isolates share one D1", func(t *testing.T) {
		require.Equal(t, int64(1), smokeD1(t, edge.URL("w0")))
		require.Equal(t, int64(2), smokeD1(t, edge.URL("w1")))
	})

	t.Run("parallel D1 upserts are serialized", func(t *testing.T) {
		const calls = 20
		var (
			mu   sync.Mutex
			got  []int64
			wg   sync.WaitGroup
			errs = make(chan error, calls)
		)
		for i := range calls {
			wg.Go(func() {
				n, err := trySmokeD1(edge.URL(fmt.Sprintf("w%d", i%2)))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				got = append(got, n)
				mu.Unlock()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
		want := make([]int64, calls)
		for i := range want {
			want[i] = int64(i + 3)
		}
		require.Equal(t, want, got)
	})

	t.Run("outbound fetch reaches a loopback upstream", func(t *testing.T) {
		var hits atomic.Int64
		upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			_, _ = io.WriteString(w, "hello from upstream")
		}))
		t.Cleanup(upstream.Close)

		status, body := get(t, edge.URL("w0")+"/_smoke/fetch?url="+url.QueryEscape(upstream.URL+"/x"))
		require.Equal(t, http.StatusOK, status, body)
		require.Equal(t, "hello from upstream", body)
		require.Equal(t, int64(1), hits.Load())
	})

	t.Run("cron handler runs and D1 file is readable", func(t *testing.T) {
		require.NoError(t, edge.Scheduled(context.Background(), "w1", "*/15 * * * *"))
		db := edge.OpenD1(t)
		var sum, cron int64
		require.NoError(t, db.QueryRow(`SELECT SUM(n) FILTER (WHERE k = 'x'), SUM(n) FILTER (WHERE k = 'cron') FROM smoke`).Scan(&sum, &cron))
		require.Equal(t, int64(22), sum) // 2 + 20 upserts of key "x"
		require.Equal(t, int64(1), cron)
	})
}

// TestE2EMigrations checks that the harness applies migrations like `wrangler d1 migrations apply`:
// compound statements survive, each file is recorded in d1_migrations, and a restart applies nothing twice.
func TestE2EMigrations(t *testing.T) {
	t.Parallel()
	opts := edgetest.Options{MigrationsDir: "worker/testdata/migrations", PersistDir: t.TempDir()}
	for range 2 { // the second start must find both files applied (0002 would double the balance)
		edge := edgetest.Start(t, opts)
		edge.Close()
	}
	db := edgetest.OpenD1File(t, opts.PersistDir)
	var balance int64
	require.NoError(t, db.QueryRow(`SELECT balance FROM accounts WHERE id = 'a; b'`).Scan(&balance))
	require.Equal(t, int64(380), balance)
	var names string
	require.NoError(t, db.QueryRow(`SELECT group_concat(name, ',') FROM (SELECT name FROM d1_migrations ORDER BY id)`).Scan(&names))
	require.Equal(t, "0001_accounts.sql,0002_seed.sql", names)
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	res, err := http.Get(u)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(body)
}

func smokeD1(t *testing.T, base string) int64 {
	t.Helper()
	n, err := trySmokeD1(base)
	require.NoError(t, err)
	return n
}

// trySmokeD1 calls /_smoke/d1 and returns the counter value; it does not touch t, so goroutines can use it.
func trySmokeD1(base string) (int64, error) {
	res, err := http.Get(base + "/_smoke/d1")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/_smoke/d1: %s: %s", res.Status, body)
	}
	var out struct{ N int64 }
	if err := json.Unmarshal(body, &out); err != nil {
		return 0, fmt.Errorf("/_smoke/d1: decode %q: %w", body, err)
	}
	return out.N, nil
}
