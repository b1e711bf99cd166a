//go:build !js

package storetest_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
)

// faultDB opens a fresh SQLite file with one table t(v) and returns its
// client (which batches in a transaction).
func faultDB(t *testing.T) *store.SQLClient {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "faults.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.DB().Close() })
	_, err = db.Exec(context.Background(), `CREATE TABLE t (v INTEGER)`)
	require.NoError(t, err)
	return db
}

func rowCount(t *testing.T, db store.DbClient) int64 {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT count(*) FROM t`)
	require.NoError(t, err)
	return rows[0][0].(int64)
}

func faultKind(err error) storetest.FaultKind {
	var fe *storetest.FaultError
	if errors.As(err, &fe) {
		return fe.Kind
	}
	return ""
}

func TestFaultClientBeforeAppliesNothing(t *testing.T) {
	t.Parallel()
	db := faultDB(t)
	fc := storetest.NewFaultClient(db, storetest.FaultConfig{BeforeRate: 1})
	_, err := fc.Exec(context.Background(), `INSERT INTO t VALUES (1)`)
	require.ErrorIs(t, err, storetest.ErrInjected)
	require.Equal(t, storetest.FaultBefore, faultKind(err))
	_, err = fc.Query(context.Background(), `INSERT INTO t VALUES (2) RETURNING v`)
	require.Equal(t, storetest.FaultBefore, faultKind(err))
	require.Equal(t, int64(0), rowCount(t, db), "an error before execution applies nothing")
	require.Equal(t, storetest.FaultCounts{Calls: 2, Before: 2}, fc.Counts())
}

func TestFaultClientAfterCommitApplies(t *testing.T) {
	t.Parallel()
	db := faultDB(t)
	fc := storetest.NewFaultClient(db, storetest.FaultConfig{AfterRate: 1})
	_, err := fc.Exec(context.Background(), `INSERT INTO t VALUES (1)`)
	require.Equal(t, storetest.FaultAfter, faultKind(err))
	require.Contains(t, err.Error(), "network connection lost")
	rows, err := fc.Query(context.Background(), `INSERT INTO t VALUES (2) RETURNING v`)
	require.Equal(t, storetest.FaultAfter, faultKind(err))
	require.Nil(t, rows, "the reply is lost")
	require.Equal(t, int64(2), rowCount(t, db), "an error after commit loses only the reply")
	// A statement that fails by itself keeps its own error.
	_, err = fc.Exec(context.Background(), `INSERT INTO nope VALUES (1)`)
	require.Error(t, err)
	require.NotErrorIs(t, err, storetest.ErrInjected)
	require.Equal(t, storetest.FaultCounts{Calls: 3, After: 3}, fc.Counts())
}

func TestFaultClientSeedIsDeterministic(t *testing.T) {
	t.Parallel()
	db := faultDB(t)
	run := func(seed uint64) ([]storetest.FaultKind, storetest.FaultCounts) {
		fc := storetest.NewFaultClient(db, storetest.FaultConfig{Seed: seed, BeforeRate: 0.2, AfterRate: 0.2})
		var kinds []storetest.FaultKind
		for i := 0; i < 200; i++ {
			_, err := fc.Query(context.Background(), `SELECT 1`)
			kinds = append(kinds, faultKind(err))
		}
		return kinds, fc.Counts()
	}
	a, ca := run(7)
	b, cb := run(7)
	c, _ := run(8)
	require.Equal(t, a, b, "one seed, one sequence of faults")
	require.Equal(t, ca, cb)
	require.NotEqual(t, a, c, "another seed, another sequence")
	var before, after int64
	for _, k := range a {
		switch k {
		case storetest.FaultBefore:
			before++
		case storetest.FaultAfter:
			after++
		}
	}
	require.Equal(t, storetest.FaultCounts{Calls: 200, Before: before, After: after}, ca)
	require.Positive(t, before)
	require.Positive(t, after)
	require.Less(t, before+after, int64(200))
}

func TestFaultClientMatchAndCap(t *testing.T) {
	t.Parallel()
	db := faultDB(t)
	fc := storetest.NewFaultClient(db, storetest.FaultConfig{AfterRate: 1, MaxErrors: 2,
		MatchFunc: storetest.QueryHasPrefix("INSERT INTO t")})
	ctx := context.Background()
	_, err := fc.Query(ctx, `SELECT count(*) FROM t`)
	require.NoError(t, err, "a statement the filter does not select is not faulted")
	for i := 0; i < 2; i++ {
		_, err = fc.Exec(ctx, "\n\tINSERT INTO t VALUES (1)")
		require.Equal(t, storetest.FaultAfter, faultKind(err), "insert %d", i)
	}
	_, err = fc.Exec(ctx, `INSERT INTO t VALUES (1)`)
	require.NoError(t, err, "MaxErrors caps the injected errors")
	require.Equal(t, int64(3), rowCount(t, db))
	require.Equal(t, storetest.FaultCounts{Calls: 4, After: 2}, fc.Counts())
}

func TestFaultClientOutageAndSwitch(t *testing.T) {
	t.Parallel()
	db := faultDB(t)
	fc := storetest.NewFaultClient(db, storetest.FaultConfig{BeforeRate: 1,
		MatchFunc: storetest.QueryHasPrefix("INSERT")})
	ctx := context.Background()
	fc.SetEnabled(false)
	_, err := fc.Exec(ctx, `INSERT INTO t VALUES (1)`)
	require.NoError(t, err, "disabled: no random faults")

	fc.StartOutage()
	for _, q := range []string{`INSERT INTO t VALUES (2)`, `SELECT 1`} {
		_, err = fc.Query(ctx, q)
		require.Equal(t, storetest.FaultOutage, faultKind(err), "an outage fails every call: %s", q)
	}
	_, err = fc.Batch(ctx, []store.Stmt{{Query: `INSERT INTO t VALUES (3)`}})
	require.Equal(t, storetest.FaultOutage, faultKind(err))
	fc.EndOutage()
	require.Equal(t, int64(1), rowCount(t, fc), "the outage applied nothing; the database is back")

	fc.SetEnabled(true)
	_, err = fc.Exec(ctx, `INSERT INTO t VALUES (4)`)
	require.Equal(t, storetest.FaultBefore, faultKind(err))
	require.Equal(t, storetest.FaultCounts{Calls: 6, Before: 1, Outage: 3}, fc.Counts())
}

func TestFaultClientBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	stmts := []store.Stmt{{Query: `SELECT 1`}, {Query: `INSERT INTO t VALUES (?) RETURNING v`, Args: []any{int64(5)}}}

	db := faultDB(t)
	before := storetest.NewFaultClient(db, storetest.FaultConfig{BeforeRate: 1, MatchFunc: storetest.QueryHasPrefix("INSERT")})
	_, err := before.Batch(ctx, stmts)
	require.Equal(t, storetest.FaultBefore, faultKind(err), "a batch matches when any statement does")
	require.Equal(t, int64(0), rowCount(t, db))

	after := storetest.NewFaultClient(db, storetest.FaultConfig{AfterRate: 1})
	_, err = after.Batch(ctx, stmts)
	require.Equal(t, storetest.FaultAfter, faultKind(err))
	require.Equal(t, int64(1), rowCount(t, db), "the batch committed; its reply was lost")

	// The decorator batches exactly when its inner client does, also under
	// a CountingClient.
	b, ok := store.BatcherOf(&store.CountingClient{Inner: after})
	require.True(t, ok)
	out, err := storetest.NewFaultClient(db, storetest.FaultConfig{}).Batch(ctx, stmts)
	require.NoError(t, err)
	require.Equal(t, [][]any{{int64(5)}}, out[1])
	require.NotNil(t, b)

	plain := storetest.NewFaultClient(store.NewSQLClient("sqlite", db.DB()), storetest.FaultConfig{})
	_, ok = store.BatcherOf(plain)
	require.False(t, ok)
	_, ok = store.BatcherOf(&store.CountingClient{Inner: plain})
	require.False(t, ok)
	_, err = plain.Batch(ctx, stmts)
	require.ErrorContains(t, err, "cannot batch")
}

func TestFaultClientLatency(t *testing.T) {
	t.Parallel()
	db := faultDB(t)
	fc := storetest.NewFaultClient(db, storetest.FaultConfig{LatencyRate: 1})
	for i := 0; i < 5; i++ {
		_, err := fc.Exec(context.Background(), `INSERT INTO t VALUES (1)`)
		require.NoError(t, err, "latency delays a call; it still runs")
	}
	require.Equal(t, int64(5), rowCount(t, db))
	require.Equal(t, storetest.FaultCounts{Calls: 5, Latency: 5}, fc.Counts())

	// A cancelled context ends the delay with its error, applying nothing.
	slow := storetest.NewFaultClient(db, storetest.FaultConfig{LatencyRate: 1, MaxLatency: 1 << 62})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := slow.Exec(ctx, `INSERT INTO t VALUES (1)`)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, int64(5), rowCount(t, db))
}

// faultHarness opens fresh SQLite stores over a FaultClient; wrap, if not
// nil, wraps the store.
func faultHarness(t *testing.T, wrap func(*sqlstore.Store) store.Store) storetest.FaultHarness {
	return storetest.FaultHarness{New: func(tb storetest.TB, cfg storetest.FaultConfig) (store.Store, *storetest.FaultClient) {
		db, err := sqlite.Open(filepath.Join(t.TempDir(), "storm.db"))
		require.NoError(tb, err)
		t.Cleanup(func() { _ = db.DB().Close() })
		require.NoError(tb, sqlstore.Migrate(context.Background(), db))
		fc := storetest.NewFaultClient(db, cfg)
		var s store.Store = sqlstore.New(fc)
		if wrap != nil {
			s = wrap(sqlstore.New(fc))
		}
		return s, fc
	}}
}

// doubleCredit credits on every call, as if references were not checked:
// a credit retried after a lost reply is applied twice.
type doubleCredit struct {
	*sqlstore.Store
	n *atomic.Int64
}

func (d doubleCredit) Credit(ctx context.Context, p store.CreditParams) (store.CreditResult, error) {
	p.Reference = fmt.Sprint(p.Reference, "#", d.n.Add(1))
	return d.Store.Credit(ctx, p)
}

// TestFaultStormsCatchRetryBugs checks that the fault storms pass on a
// correct store and fail on one whose writes are not safe to retry after a
// lost reply.
func TestFaultStormsCatchRetryBugs(t *testing.T) {
	t.Parallel()
	for _, r := range storetest.RunAllFaults(faultHarness(t, nil)) {
		require.True(t, r.Passed, "%s: %s", r.Name, r.Failure)
	}
	failed := map[string]string{}
	for _, r := range storetest.RunAllFaults(faultHarness(t, func(s *sqlstore.Store) store.Store {
		return doubleCredit{Store: s, n: &atomic.Int64{}}
	})) {
		if !r.Passed {
			failed[r.Name] = r.Failure
		}
	}
	require.Contains(t, failed, "StormClaimChargeFinish")
	require.Contains(t, failed["StormClaimChargeFinish"], "balance of alice")
}
