//go:build !js

package hranatest

import (
	"context"
	"database/sql"
	"math"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	_ "github.com/tursodatabase/libsql-client-go/libsql" // registers the "libsql" driver
)

// setupClient starts a server and opens the real libSQL Go client on it.
func setupClient(t *testing.T) (*Server, *sql.DB) {
	t.Helper()
	srv := setup(t)
	db, err := sql.Open("libsql", srv.URL()) // plain http://127.0.0.1:PORT, no token needed
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return srv, db
}

func TestClientValuesRoundTrip(t *testing.T) {
	t.Parallel()
	_, db := setupClient(t)
	ctx := t.Context()
	_, err := db.ExecContext(ctx, "CREATE TABLE v(id INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB, n TEXT)")
	require.NoError(t, err)

	const maxSafe = int64(1<<53 - 1)
	res, err := db.ExecContext(ctx, "INSERT INTO v(i, f, s, b, n) VALUES (?, ?, ?, ?, ?)",
		maxSafe, 3.25, "héllo", []byte{0, 1, 2, 255}, nil)
	require.NoError(t, err)
	requireResult(t, res, 1, 1)
	res, err = db.ExecContext(ctx, "INSERT INTO v(i, f, s, b, n) VALUES (:i, :f, :s, :b, :n)",
		sql.Named("i", int64(math.MaxInt64)), sql.Named("f", -0.5), sql.Named("s", ""),
		sql.Named("b", []byte{}), sql.Named("n", "x"))
	require.NoError(t, err)
	requireResult(t, res, 2, 1)

	type row struct {
		i int64
		f float64
		s string
		b []byte
		n sql.NullString
	}
	rows, err := db.QueryContext(ctx, "SELECT i, f, s, b, n FROM v ORDER BY id")
	require.NoError(t, err)
	defer rows.Close()
	var got []row
	for rows.Next() {
		var r row
		require.NoError(t, rows.Scan(&r.i, &r.f, &r.s, &r.b, &r.n))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []row{
		{maxSafe, 3.25, "héllo", []byte{0, 1, 2, 255}, sql.NullString{}},
		{math.MaxInt64, -0.5, "", []byte{}, sql.NullString{String: "x", Valid: true}},
	}, got)
}

func TestClientRowsAffected(t *testing.T) {
	t.Parallel()
	_, db := setupClient(t)
	ctx := t.Context()
	_, err := db.ExecContext(ctx, "CREATE TABLE t(k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
	require.NoError(t, err)
	res, err := db.ExecContext(ctx, "INSERT INTO t VALUES ('a', 1), ('b', 2)")
	require.NoError(t, err)
	requireResult(t, res, 2, 2)

	res, err = db.ExecContext(ctx, "INSERT INTO t VALUES ('a', 9) ON CONFLICT DO NOTHING")
	require.NoError(t, err)
	affected, err := res.RowsAffected()
	require.NoError(t, err)
	require.Zero(t, affected)

	// Exec drops the RETURNING rows but the count is still the statement's.
	res, err = db.ExecContext(ctx, "UPDATE t SET n = n + 10 RETURNING k")
	require.NoError(t, err)
	affected, err = res.RowsAffected()
	require.NoError(t, err)
	require.Equal(t, int64(2), affected)

	rows, err := db.QueryContext(ctx, "UPDATE t SET n = n * 2 WHERE k = ? RETURNING k, n", "b")
	require.NoError(t, err)
	defer rows.Close()
	require.True(t, rows.Next())
	var k string
	var n int64
	require.NoError(t, rows.Scan(&k, &n))
	require.Equal(t, "b", k)
	require.Equal(t, int64(24), n)
	require.False(t, rows.Next())
	require.NoError(t, rows.Err())

	var stored int64
	require.NoError(t, db.QueryRowContext(ctx, "SELECT n FROM t WHERE k = 'b'").Scan(&stored))
	require.Equal(t, int64(24), stored)
}

func TestClientTransactions(t *testing.T) {
	t.Parallel()
	_, db := setupClient(t)
	ctx := t.Context()
	_, err := db.ExecContext(ctx, "CREATE TABLE t(k INTEGER PRIMARY KEY)")
	require.NoError(t, err)

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	res, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (1), (2)")
	require.NoError(t, err)
	requireResult(t, res, 2, 2)
	res, err = tx.ExecContext(ctx, "SELECT k FROM t")
	require.NoError(t, err)
	affected, err := res.RowsAffected()
	require.NoError(t, err)
	require.Zero(t, affected, "a SELECT after an INSERT changes nothing")
	require.Equal(t, 0, count(t, db, "t"), "uncommitted rows are invisible to other streams")
	require.NoError(t, tx.Commit())
	require.Equal(t, 2, count(t, db, "t"))

	tx, err = db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = tx.ExecContext(ctx, "INSERT INTO t VALUES (3)")
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())
	require.Equal(t, 2, count(t, db, "t"))
}

func TestClientMultiStatementExec(t *testing.T) {
	t.Parallel()
	_, db := setupClient(t)
	ctx := t.Context()
	_, err := db.ExecContext(ctx, "CREATE TABLE t(k INTEGER PRIMARY KEY)")
	require.NoError(t, err)

	// The client sends one batch whose steps each need the previous one to
	// succeed, and a last step that rolls back if they did not.
	res, err := db.ExecContext(ctx, "BEGIN; INSERT INTO t VALUES (1); INSERT INTO t VALUES (2), (3); COMMIT;")
	require.NoError(t, err)
	affected, err := res.RowsAffected()
	require.NoError(t, err)
	require.Equal(t, int64(3), affected)

	_, err = db.ExecContext(ctx, "BEGIN; INSERT INTO t VALUES (4); INSERT INTO t VALUES (1); COMMIT;")
	require.ErrorContains(t, err, "UNIQUE constraint failed")
	require.Equal(t, 3, count(t, db, "t"), "the failed batch left nothing behind")
}

func TestClientConcurrentInsertOrIgnore(t *testing.T) {
	t.Parallel()
	_, db := setupClient(t)
	ctx := t.Context()
	_, err := db.ExecContext(ctx, "CREATE TABLE claims(key TEXT PRIMARY KEY, owner INTEGER NOT NULL)")
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "CREATE TABLE counter(n INTEGER NOT NULL); INSERT INTO counter VALUES (0)")
	require.NoError(t, err)

	const workers, increments = 50, 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	var winners []int
	errs := make(chan error, workers*(increments+1))
	for w := range workers {
		wg.Go(func() {
			res, err := db.ExecContext(ctx, "INSERT OR IGNORE INTO claims VALUES ('k', ?)", w)
			if err != nil {
				errs <- err
				return
			}
			n, err := res.RowsAffected()
			if err != nil {
				errs <- err
				return
			}
			if n == 1 {
				mu.Lock()
				winners = append(winners, w)
				mu.Unlock()
			}
			// Write contention waits for the lock instead of failing.
			for range increments {
				if _, err := db.ExecContext(ctx, "UPDATE counter SET n = n + 1"); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, winners, 1)
	var owner, total int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT owner FROM claims WHERE key = 'k'").Scan(&owner))
	require.Equal(t, winners[0], owner)
	require.NoError(t, db.QueryRowContext(ctx, "SELECT n FROM counter").Scan(&total))
	require.Equal(t, workers*increments, total)
}

func requireResult(t *testing.T, res sql.Result, lastInsertID, affected int64) {
	t.Helper()
	id, err := res.LastInsertId()
	require.NoError(t, err)
	require.Equal(t, lastInsertID, id)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	require.Equal(t, affected, n)
}

func count(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRowContext(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}
