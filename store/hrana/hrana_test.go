//go:build !js

package hrana_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/hrana"
	"github.com/toolgate/toolgate-go/store/libsql/hranatest"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
)

var (
	t0    = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	lease = 10 * time.Second
)

func TestMain(m *testing.M) {
	storetest.MaybeChild(func(url string) (store.Store, error) {
		db, err := hrana.Open(url, hrana.Options{})
		if err != nil {
			return nil, err
		}
		return sqlstore.New(db), nil
	})
	os.Exit(m.Run())
}

// setup starts a Hrana test server on a fresh SQLite file, opens the client
// against it over HTTP and migrates the schema.
func setup(t storetest.TB, dir string) (*sqlstore.Store, *store.CountingClient, *hranatest.Server) {
	t.Helper()
	srv, err := hranatest.Start(filepath.Join(dir, "hrana.db"))
	require.NoError(t, err)
	db, err := hrana.Open(srv.URL(), hrana.Options{})
	require.NoError(t, err)
	require.NoError(t, sqlstore.Migrate(context.Background(), db))
	rt := &store.CountingClient{Inner: db}
	return sqlstore.New(rt), rt, srv
}

func open(t *testing.T, url string) *hrana.Client {
	t.Helper()
	c, err := hrana.Open(url, hrana.Options{})
	require.NoError(t, err)
	return c
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, storetest.Harness{New: func(tb storetest.TB) (store.Store, *store.CountingClient) {
		s, rt, srv := setup(tb, t.TempDir())
		t.Cleanup(func() { srv.Close() })
		return s, rt
	}})
}

// TestProcessRace: 8 OS processes race one key through this client against
// the Hrana test server.
func TestProcessRace(t *testing.T) {
	t.Parallel()
	s, _, srv := setup(t, t.TempDir())
	defer srv.Close()
	storetest.ProcessRace(t, s, srv.URL(), 8)
}

// TestOneHTTPRequestPerCall pins the cost: every Exec, Query and Batch is
// exactly one HTTP request (the stream is closed in the same pipeline), so a
// paid call's claim-and-charge is one request.
func TestOneHTTPRequestPerCall(t *testing.T) {
	t.Parallel()
	s, rt, srv := setup(t, t.TempDir())
	defer srv.Close()
	ctx := context.Background()
	require.True(t, rt.CanBatch())
	_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 1000, Reference: "seed", Now: t0})
	require.NoError(t, err)

	const n = 20
	reqs, trips := srv.Requests(), rt.Count()
	for i := range n {
		res, err := s.ClaimCharge(ctx, store.ClaimChargeParams{ClaimParams: store.ClaimParams{Key: fmt.Sprint("k", i),
			Owner: "A", Fingerprint: "fp", Now: t0, Lease: lease}, Caller: "alice", Currency: "USD", Amount: 10})
		require.NoError(t, err)
		require.NoError(t, res.ChargeErr)
		require.True(t, res.Charge.Charged)
	}
	require.Equal(t, int64(n), rt.Count()-trips, "one round trip per claim-and-charge")
	require.Equal(t, int64(n), srv.Requests()-reqs, "one HTTP request per round trip")
	bal, err := s.Balance(ctx, "alice", "USD")
	require.NoError(t, err)
	require.Equal(t, int64(1000-10*n), bal)
	require.NoError(t, s.CheckInvariants(ctx))
}

// TestValuesRoundTrip checks that every value type comes back as what
// store.SQLClient returns: integers as int64 (the extremes exact), floats,
// text with escapes and non-ASCII, blobs, NULL.
func TestValuesRoundTrip(t *testing.T) {
	t.Parallel()
	_, _, srv := setup(t, t.TempDir())
	defer srv.Close()
	c := open(t, srv.URL())
	ctx := context.Background()
	_, err := c.Exec(ctx, `CREATE TABLE v (i INTEGER, f REAL, s TEXT, b BLOB, n TEXT)`)
	require.NoError(t, err)
	text := "quote \" backslash \\ newline \n tab \t nul \x00 ctrl \x1f unicode é 😀 </script>"
	for name, tc := range map[string]struct {
		in   []any
		want []any
	}{
		"max":   {[]any{int64(math.MaxInt64), 1.5, text, []byte{0, 1, 2, 255}, nil}, []any{int64(math.MaxInt64), 1.5, text, []byte{0, 1, 2, 255}, nil}},
		"min":   {[]any{int64(math.MinInt64), -0.25, "", []byte("x"), nil}, []any{int64(math.MinInt64), -0.25, "", []byte("x"), nil}},
		"int":   {[]any{42, 1e300, "a", []byte("ab"), nil}, []any{int64(42), 1e300, "a", []byte("ab"), nil}},
		"bool":  {[]any{true, 2.0, "b", []byte("abc"), nil}, []any{int64(1), 2.0, "b", []byte("abc"), nil}},
		"money": {[]any{int64(1<<53 - 1), 0.1, "c", []byte("abcd"), nil}, []any{int64(1<<53 - 1), 0.1, "c", []byte("abcd"), nil}},
	} {
		_, err := c.Exec(ctx, `DELETE FROM v`)
		require.NoError(t, err)
		n, err := c.Exec(ctx, `INSERT INTO v VALUES (?, ?, ?, ?, ?)`, tc.in...)
		require.NoError(t, err, name)
		require.Equal(t, int64(1), n, name)
		rows, err := c.Query(ctx, `SELECT i, f, s, b, n FROM v`)
		require.NoError(t, err, name)
		require.Equal(t, [][]any{tc.want}, rows, name)
	}
	rows, err := c.Query(ctx, `SELECT 1 WHERE 0`)
	require.NoError(t, err)
	require.Empty(t, rows)
	_, err = c.Exec(ctx, `INSERT INTO v (f) VALUES (?)`, math.NaN())
	require.ErrorContains(t, err, "hrana: exec: argument 1")
	_, err = c.Exec(ctx, `INSERT INTO v (n) VALUES (?)`, struct{}{})
	require.ErrorContains(t, err, "unsupported type")
}

// TestExecRowsAffected checks the changed-row count of writes.
func TestExecRowsAffected(t *testing.T) {
	t.Parallel()
	_, _, srv := setup(t, t.TempDir())
	defer srv.Close()
	c := open(t, srv.URL())
	ctx := context.Background()
	_, err := c.Exec(ctx, `CREATE TABLE r (k TEXT PRIMARY KEY, n INTEGER)`)
	require.NoError(t, err)
	// In order: the cases depend on each other.
	for _, tc := range []struct {
		sql  string
		args []any
		want int64
	}{
		{`INSERT INTO r VALUES ('a', 1), ('b', 2), ('c', 3)`, nil, 3},
		{`INSERT OR IGNORE INTO r VALUES (?, ?)`, []any{"a", 9}, 0},
		{`UPDATE r SET n = n + 1 WHERE n < ?`, []any{3}, 2},
		{`DELETE FROM r WHERE k = ?`, []any{"c"}, 1},
		{`UPDATE r SET n = 0 WHERE k = 'zz'`, nil, 0},
	} {
		n, err := c.Exec(ctx, tc.sql, tc.args...)
		require.NoError(t, err, tc.sql)
		require.Equal(t, tc.want, n, tc.sql)
	}
}

// TestBatchAllOrNothing checks that a batch whose statement fails applies
// nothing and reports which statement failed with the server's error, and
// that a good batch returns each statement's rows.
func TestBatchAllOrNothing(t *testing.T) {
	t.Parallel()
	_, _, srv := setup(t, t.TempDir())
	defer srv.Close()
	c := open(t, srv.URL())
	ctx := context.Background()
	_, err := c.Exec(ctx, `CREATE TABLE u (k TEXT PRIMARY KEY, n INTEGER NOT NULL CHECK (n >= 0))`)
	require.NoError(t, err)

	out, err := c.Batch(ctx, []store.Stmt{
		{Query: `INSERT INTO u VALUES (?, ?) RETURNING k`, Args: []any{"a", 1}},
		{Query: `UPDATE u SET n = n + 1 WHERE k = ?`, Args: []any{"a"}},
		{Query: `SELECT k, n FROM u`},
	})
	require.NoError(t, err)
	require.Equal(t, [][][]any{{{"a"}}, nil, {{"a", int64(2)}}}, out)

	for name, stmts := range map[string][]store.Stmt{
		"constraint in the middle": {
			{Query: `INSERT INTO u VALUES ('b', 1)`},
			{Query: `INSERT INTO u VALUES ('a', 5)`}, // duplicate key
			{Query: `INSERT INTO u VALUES ('c', 1)`},
		},
		"check at the end": {
			{Query: `UPDATE u SET n = 100`},
			{Query: `INSERT INTO u VALUES ('d', -1)`},
		},
		"syntax error first": {
			{Query: `INSERT INTO u VALUES ('e', 1`},
			{Query: `UPDATE u SET n = 100`},
		},
	} {
		reqs := srv.Requests()
		_, err := c.Batch(ctx, stmts)
		require.ErrorContains(t, err, "hrana: batch statement", name)
		var he *hrana.Error
		require.ErrorAs(t, err, &he, name)
		require.NotEmpty(t, he.Message, name)
		require.NotErrorIs(t, err, hrana.ErrUnavailable, name)
		require.Equal(t, int64(1), srv.Requests()-reqs, "%s: one request", name)
		rows, err := c.Query(ctx, `SELECT k, n FROM u ORDER BY k`)
		require.NoError(t, err)
		require.Equal(t, [][]any{{"a", int64(2)}}, rows, "%s: nothing applied", name)
	}
	var he *hrana.Error
	_, err = c.Batch(ctx, []store.Stmt{{Query: `INSERT INTO u VALUES ('a', 1)`}})
	require.ErrorAs(t, err, &he)
	require.Equal(t, "SQLITE_CONSTRAINT", he.Code)
	require.ErrorContains(t, err, "hrana: batch statement 1:")

	out, err = c.Batch(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, out)
}

// TestBatchesSerialize runs concurrent read-modify-write batches on one
// counter: BEGIN IMMEDIATE makes each wait for the write lock instead of
// failing, so no increment is lost.
func TestBatchesSerialize(t *testing.T) {
	t.Parallel()
	_, _, srv := setup(t, t.TempDir())
	defer srv.Close()
	c := open(t, srv.URL())
	ctx := context.Background()
	_, err := c.Exec(ctx, `CREATE TABLE ctr (n INTEGER NOT NULL)`)
	require.NoError(t, err)
	_, err = c.Exec(ctx, `INSERT INTO ctr VALUES (0)`)
	require.NoError(t, err)
	const n = 24
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := c.Batch(ctx, []store.Stmt{
				{Query: `CREATE TEMP TABLE IF NOT EXISTS seen (n INTEGER)`},
				{Query: `INSERT INTO temp.seen SELECT n FROM ctr`},
				{Query: `UPDATE ctr SET n = (SELECT max(n) FROM temp.seen) + 1`},
			})
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	rows, err := c.Query(ctx, `SELECT n FROM ctr`)
	require.NoError(t, err)
	require.Equal(t, [][]any{{int64(n)}}, rows)
}

// TestUnavailable checks that transport failures and 5xx answers wrap
// ErrUnavailable, and that SQL errors and 4xx answers do not.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	_, _, srv := setup(t, t.TempDir())
	url := srv.URL()
	require.NoError(t, srv.Close())
	_, err := open(t, url).Exec(ctx, `SELECT 1`)
	require.ErrorIs(t, err, hrana.ErrUnavailable, "server gone")
	require.ErrorContains(t, err, "hrana: exec:")

	for name, tc := range map[string]struct {
		status      int
		body        string
		unavailable bool
		contains    string
	}{
		"503 text":          {http.StatusServiceUnavailable, "upstream connect error", true, "server error: upstream connect error (HTTP 503)"},
		"500 hrana error":   {http.StatusInternalServerError, `{"message":"internal","code":"INTERNAL"}`, true, "internal (INTERNAL) (HTTP 500)"},
		"502 empty":         {http.StatusBadGateway, "", true, "empty response (HTTP 502)"},
		"400 stream closed": {http.StatusBadRequest, `{"error":"stream expired","message":"stream expired","code":"STREAM_EXPIRED"}`, false, "stream expired (STREAM_EXPIRED) (HTTP 400)"},
		"401 unauthorized":  {http.StatusUnauthorized, `{"error":"Unauthorized: bad token"}`, false, "Unauthorized: bad token (HTTP 401)"},
		"200 not json":      {http.StatusOK, "<html>", false, "decode pipeline response"},
		"200 no results":    {http.StatusOK, `{"baton":null,"results":[]}`, false, "got 0 results, want 2"},
	} {
		fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			_, _ = io.WriteString(w, tc.body)
		}))
		_, err := open(t, fake.URL).Query(ctx, `SELECT 1`)
		fake.Close()
		require.ErrorContains(t, err, tc.contains, name)
		require.ErrorContains(t, err, "hrana: query:", name)
		require.Equal(t, tc.unavailable, errors.Is(err, hrana.ErrUnavailable), "%s: %v", name, err)
	}
}

// TestStatementErrorIsNotUnavailable: an SQL error is a *hrana.Error with
// the server's code, not a transport failure.
func TestStatementErrorIsNotUnavailable(t *testing.T) {
	t.Parallel()
	_, _, srv := setup(t, t.TempDir())
	defer srv.Close()
	_, err := open(t, srv.URL()).Query(context.Background(), `SELECT * FROM missing`)
	var he *hrana.Error
	require.ErrorAs(t, err, &he)
	require.Contains(t, he.Message, "no such table")
	require.Zero(t, he.Status)
	require.NotErrorIs(t, err, hrana.ErrUnavailable)
}

// TestAuthAndURL checks the Authorization header, the URL forms Open
// accepts and the pipeline endpoint they map to.
func TestAuthAndURL(t *testing.T) {
	t.Parallel()
	_, _, srv := setup(t, t.TempDir())
	defer srv.Close()
	var got []string
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/prefix")
		srv.ServeHTTP(w, r)
	}))
	defer front.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		url, token, want string
	}{
		{front.URL, "tok", "POST /v2/pipeline Bearer tok"},
		{front.URL + "/prefix/", "", "POST /prefix/v2/pipeline "},
		{front.URL + "?authToken=fromurl", "", "POST /v2/pipeline Bearer fromurl"},
		{front.URL + "?authToken=fromurl", "explicit", "POST /v2/pipeline Bearer explicit"},
		{strings.Replace(front.URL, "http://", "libsql://", 1) + "?tls=0", "t", "POST /v2/pipeline Bearer t"},
	} {
		got = nil
		c, err := hrana.Open(tc.url, hrana.Options{AuthToken: tc.token})
		require.NoError(t, err, tc.url)
		rows, err := c.Query(ctx, `SELECT 1`)
		require.NoError(t, err, tc.url)
		require.Equal(t, [][]any{{int64(1)}}, rows)
		require.Equal(t, []string{tc.want}, got, tc.url)
	}
	for in, want := range map[string]string{
		"libsql://db-org.turso.io":            "https://db-org.turso.io/v2/pipeline",
		"libsql://db-org.turso.io/?tls=1":     "https://db-org.turso.io/v2/pipeline",
		"https://db.example/base?authToken=x": "https://db.example/base/v2/pipeline",
		"http://127.0.0.1:8080":               "http://127.0.0.1:8080/v2/pipeline",
	} {
		c, err := hrana.Open(in, hrana.Options{})
		require.NoError(t, err, in)
		require.Equal(t, want, c.Endpoint(), in)
	}
	for _, bad := range []string{"file:/tmp/x.db", "ws://host", "libsql://", "https:///path", "::"} {
		_, err := hrana.Open(bad, hrana.Options{})
		require.ErrorContains(t, err, "hrana: open:", bad)
	}
}

// TestResponseBound: a response over MaxResponseBytes is refused.
func TestResponseBound(t *testing.T) {
	t.Parallel()
	_, _, srv := setup(t, t.TempDir())
	defer srv.Close()
	c, err := hrana.Open(srv.URL(), hrana.Options{MaxResponseBytes: 4 << 10})
	require.NoError(t, err)
	ctx := context.Background()
	rows, err := c.Query(ctx, `SELECT ?`, strings.Repeat("x", 3<<10))
	require.NoError(t, err)
	require.Len(t, rows, 1)
	_, err = c.Query(ctx, `SELECT ?`, strings.Repeat("x", 5<<10))
	require.ErrorContains(t, err, "hrana: query: pipeline: response larger than 4096 bytes")
}

// TestContextEnds: a call returns the context's error when ctx ends while
// the server stalls, even with a SendFunc that ignores ctx (as the
// worker's fetch does); the stalled request then finishes on its own.
func TestContextEnds(t *testing.T) {
	t.Parallel()
	_, _, srv := setup(t, t.TempDir())
	defer srv.Close()
	ignoreCtx := func(r *http.Request) (*http.Response, error) {
		return http.DefaultClient.Do(r.Clone(context.Background()))
	}
	for name, send := range map[string]func(*http.Request) (*http.Response, error){"native": nil, "ignores ctx": ignoreCtx} {
		c, err := hrana.Open(srv.URL(), hrana.Options{SendFunc: send})
		require.NoError(t, err)
		release := srv.Pause()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := c.Exec(ctx, `SELECT 1`)
			done <- err
		}()
		require.NoError(t, srv.WaitPaused(context.Background(), 1))
		cancel()
		err = <-done
		require.ErrorIs(t, err, context.Canceled, name)
		require.NotErrorIs(t, err, hrana.ErrUnavailable, name)
		release()
		_, err = c.Exec(context.Background(), `SELECT 1`)
		require.NoError(t, err, name)
	}
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, storetest.Harness{New: func(tb storetest.TB) (store.Store, *store.CountingClient) {
		s, rt, srv := setup(tb, b.TempDir())
		b.Cleanup(func() { srv.Close() })
		return s, rt
	}})
}
