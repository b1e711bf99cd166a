//go:build !js

package hranatest

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// setup starts a server on a fresh database file and closes it when the test ends.
func setup(t *testing.T, opts ...Option) *Server {
	t.Helper()
	srv, err := Start(filepath.Join(t.TempDir(), "test.db"), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	return srv
}

// reply is a pipeline response as a client decodes it.
type reply struct {
	Baton   *string `json:"baton"`
	BaseURL *string `json:"base_url"`
	Results []struct {
		Type     string `json:"type"`
		Response *struct {
			Type         string          `json:"type"`
			Result       json.RawMessage `json:"result"`
			IsAutocommit *bool           `json:"is_autocommit"`
		} `json:"response"`
		Error *hranaError `json:"error"`
	} `json:"results"`
}

// stmt decodes the execute result of request i.
func (r reply) stmt(t *testing.T, i int) stmtResult {
	t.Helper()
	require.Equal(t, "ok", r.Results[i].Type, "request %d: %+v", i, r.Results[i].Error)
	var res stmtResult
	require.NoError(t, json.Unmarshal(r.Results[i].Response.Result, &res))
	return res
}

// batch decodes the batch result of request i.
func (r reply) batch(t *testing.T, i int) batchResult {
	t.Helper()
	require.Equal(t, "ok", r.Results[i].Type, "request %d: %+v", i, r.Results[i].Error)
	var res batchResult
	require.NoError(t, json.Unmarshal(r.Results[i].Response.Result, &res))
	return res
}

// post sends a raw body to /v2/pipeline and returns the status and body.
func post(t *testing.T, srv *Server, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(srv.URL()+"/v2/pipeline", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// pipeline sends requests on the stream baton names (nil opens one) and
// requires HTTP 200.
func pipeline(t *testing.T, srv *Server, baton *string, requests ...string) reply {
	t.Helper()
	b, err := json.Marshal(baton)
	require.NoError(t, err)
	status, body := post(t, srv, `{"baton":`+string(b)+`,"requests":[`+strings.Join(requests, ",")+`]}`)
	require.Equal(t, http.StatusOK, status, string(body))
	var r reply
	require.NoError(t, json.Unmarshal(body, &r))
	require.Len(t, r.Results, len(requests))
	return r
}

// execute is an execute request for sql without arguments.
func execute(sql string) string {
	b, _ := json.Marshal(sql)
	return `{"type":"execute","stmt":{"sql":` + string(b) + `}}`
}

const closeReq = `{"type":"close"}`

func TestPipelineAffectedRowCount(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	steps := []struct {
		name     string
		sql      string
		affected int64
		rows     int
	}{
		{"create table", "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT UNIQUE)", 0, 0},
		{"insert two rows", "INSERT INTO t(v) VALUES ('a'), ('b')", 2, 0},
		{"select after insert", "SELECT * FROM t", 0, 2},
		{"on conflict do nothing", "INSERT INTO t(v) VALUES ('a') ON CONFLICT DO NOTHING", 0, 0},
		{"insert or ignore", "INSERT OR IGNORE INTO t(v) VALUES ('b')", 0, 0},
		{"update returning", "UPDATE t SET v = v || '!' RETURNING k", 2, 2},
		{"upsert returning", "INSERT INTO t(v) VALUES ('a!') ON CONFLICT(v) DO UPDATE SET v = 'c' RETURNING k", 1, 1},
		{"update without match", "UPDATE t SET v = 'z' WHERE k = 99", 0, 0},
		{"pragma after update", "PRAGMA user_version = 3", 0, 0},
		{"delete all", "DELETE FROM t", 2, 0},
		{"select after delete", "SELECT count(*) FROM t", 0, 1},
	}
	requests := make([]string, len(steps))
	for i, s := range steps {
		requests[i] = execute(s.sql)
	}
	r := pipeline(t, srv, nil, requests...)
	for i, s := range steps {
		res := r.stmt(t, i)
		require.Equal(t, s.affected, res.AffectedRowCount, s.name)
		require.Len(t, res.Rows, s.rows, s.name)
	}
	require.Equal(t, "2", *r.stmt(t, 1).LastInsertRowid)

	// The count does not leak into the next pipeline request on the stream.
	r = pipeline(t, srv, r.Baton, execute("SELECT 1"))
	require.Zero(t, r.stmt(t, 0).AffectedRowCount)
}

func TestPipelineValues(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	r := pipeline(t, srv, nil,
		execute("CREATE TABLE v(i INTEGER, f REAL, s TEXT, b BLOB, n)"),
		`{"type":"execute","stmt":{"sql":"INSERT INTO v VALUES (?, ?, ?, ?, ?)","args":[
			{"type":"integer","value":"9007199254740991"},{"type":"float","value":2.5},
			{"type":"text","value":"héllo"},{"type":"blob","base64":"AAH/"},{"type":"null"}]}}`,
		`{"type":"execute","stmt":{"sql":"INSERT INTO v VALUES (:i, @f, $s, :b, :n)","named_args":[
			{"name":":i","value":{"type":"integer","value":"9223372036854775807"}},
			{"name":"f","value":{"type":"float","value":-0.125}},
			{"name":"$s","value":{"type":"text","value":""}},
			{"name":"b","value":{"type":"blob","base64":""}},
			{"name":"n","value":{"type":"integer","value":"-9223372036854775808"}}]}}`,
		execute("SELECT i, f, s, b, n, 1.0 AS one FROM v ORDER BY rowid"),
		`{"type":"execute","stmt":{"sql":"SELECT i FROM v","want_rows":false}}`,
	)
	require.Equal(t, "1", *r.stmt(t, 1).LastInsertRowid)
	require.Equal(t, int64(1), r.stmt(t, 2).AffectedRowCount)

	var raw struct {
		Cols json.RawMessage `json:"cols"`
		Rows json.RawMessage `json:"rows"`
	}
	require.NoError(t, json.Unmarshal(r.Results[3].Response.Result, &raw))
	require.JSONEq(t, `[{"name":"i","decltype":"INTEGER"},{"name":"f","decltype":"REAL"},
		{"name":"s","decltype":"TEXT"},{"name":"b","decltype":"BLOB"},{"name":"n","decltype":null},
		{"name":"one","decltype":null}]`, string(raw.Cols))
	require.JSONEq(t, `[
		[{"type":"integer","value":"9007199254740991"},{"type":"float","value":2.5},
		 {"type":"text","value":"héllo"},{"type":"blob","base64":"AAH/"},{"type":"null"},{"type":"float","value":1}],
		[{"type":"integer","value":"9223372036854775807"},{"type":"float","value":-0.125},
		 {"type":"text","value":""},{"type":"blob","base64":""},{"type":"integer","value":"-9223372036854775808"},{"type":"float","value":1}]
	]`, string(raw.Rows))

	noRows := r.stmt(t, 4)
	require.Len(t, noRows.Cols, 1)
	require.Empty(t, noRows.Rows)
}

func TestPipelineBatchConditions(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	r := pipeline(t, srv, nil,
		execute("CREATE TABLE t(k INTEGER PRIMARY KEY)"),
		`{"type":"batch","batch":{"steps":[
			{"stmt":{"sql":"INSERT INTO t VALUES (1)"}},
			{"stmt":{"sql":"INSERT INTO t VALUES (1)"},"condition":{"type":"ok","step":0}},
			{"stmt":{"sql":"INSERT INTO t VALUES (2)"},"condition":{"type":"ok","step":1}},
			{"stmt":{"sql":"INSERT INTO t VALUES (3)"},"condition":{"type":"not","cond":{"type":"ok","step":1}}},
			{"stmt":{"sql":"INSERT INTO t VALUES (4)"},"condition":{"type":"and","conds":[{"type":"ok","step":0},{"type":"error","step":1}]}},
			{"stmt":{"sql":"INSERT INTO t VALUES (5)"},"condition":{"type":"or","conds":[{"type":"ok","step":1},{"type":"error","step":2}]}},
			{"stmt":{"sql":"SELECT 1"},"condition":{"type":"is_autocommit"}},
			{"stmt":{"sql":"SELECT group_concat(k) FROM t"}}
		]}}`,
		`{"type":"batch","batch":{"steps":[{"stmt":{"sql":"SELECT 1"},"condition":{"type":"ok","step":0}}]}}`,
	)
	res := r.batch(t, 1)
	ran := make([]bool, len(res.StepResults))
	failed := make([]bool, len(res.StepErrors))
	for i := range ran {
		ran[i], failed[i] = res.StepResults[i] != nil, res.StepErrors[i] != nil
	}
	require.Equal(t, []bool{true, false, false, true, true, false, true, true}, ran)
	require.Equal(t, []bool{false, true, false, false, false, false, false, false}, failed)
	require.Contains(t, res.StepErrors[1].Message, "UNIQUE constraint failed")
	require.Equal(t, "SQLITE_CONSTRAINT", res.StepErrors[1].Code)
	require.Equal(t, []value{{"1,3,4"}}, res.StepResults[7].Rows[0])

	// A condition on a step that has not run is a malformed batch.
	require.Equal(t, "error", r.Results[2].Type)
	require.Equal(t, "PROTOCOL_ERROR", r.Results[2].Error.Code)
}

func TestPipelineBaton(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	first := pipeline(t, srv, nil, execute("SELECT 1"))
	require.NotNil(t, first.Baton)
	require.Nil(t, first.BaseURL)
	second := pipeline(t, srv, first.Baton, execute("SELECT 1"))
	require.NotNil(t, second.Baton)
	require.NotEqual(t, *first.Baton, *second.Baton)

	for name, baton := range map[string]string{"reused": *first.Baton, "unknown": "not-a-baton"} {
		status, body := post(t, srv, `{"baton":"`+baton+`","requests":[`+execute("SELECT 1")+`]}`)
		require.Equal(t, http.StatusBadRequest, status, name)
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
			Code    string `json:"code"`
		}
		require.NoError(t, json.Unmarshal(body, &e), name)
		require.Equal(t, "STREAM_EXPIRED", e.Code, name)
		require.NotEmpty(t, e.Message, name)
		require.Equal(t, e.Message, e.Error, name)
	}

	// A rejected baton does not disturb the stream's current one.
	pipeline(t, srv, second.Baton, execute("SELECT 1"))
}

func TestPipelineClose(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	open := pipeline(t, srv, nil, execute("CREATE TABLE t(k)"), execute("BEGIN"), execute("INSERT INTO t VALUES (1)"))
	r := pipeline(t, srv, open.Baton, closeReq, execute("SELECT 1"))
	require.Nil(t, r.Baton)
	require.Equal(t, "ok", r.Results[0].Type)
	require.Equal(t, "close", r.Results[0].Response.Type)
	require.Equal(t, "error", r.Results[1].Type)

	status, _ := post(t, srv, `{"baton":"`+*open.Baton+`","requests":[]}`)
	require.Equal(t, http.StatusBadRequest, status)

	// Closing rolled back the open transaction.
	r = pipeline(t, srv, nil, execute("SELECT count(*) FROM t"))
	require.Equal(t, []value{{int64(0)}}, r.stmt(t, 0).Rows[0])
}

func TestPipelineStreamExpiry(t *testing.T) {
	t.Parallel()
	var now atomic.Int64 // fake clock, in nanoseconds
	srv := setup(t, WithStreamIdleTimeout(time.Second), WithNowFunc(func() time.Time { return time.Unix(0, now.Load()) }))

	pipeline(t, srv, nil, execute("CREATE TABLE t(k INTEGER PRIMARY KEY)"))
	held := pipeline(t, srv, nil, execute("BEGIN"), execute("INSERT INTO t VALUES (1)"))
	now.Add(int64(999 * time.Millisecond))
	held = pipeline(t, srv, held.Baton, execute("SELECT 1")) // still alive, and touched
	now.Add(int64(1001 * time.Millisecond))

	// The abandoned transaction is rolled back and no longer blocks writers.
	r := pipeline(t, srv, nil, execute("INSERT INTO t VALUES (1)"))
	require.Equal(t, int64(1), r.stmt(t, 0).AffectedRowCount)
	status, body := post(t, srv, `{"baton":"`+*held.Baton+`","requests":[`+execute("COMMIT")+`]}`)
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, string(body), "STREAM_EXPIRED")
}

func TestPipelineSQLError(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	r := pipeline(t, srv, nil,
		execute("SELEC 1"),
		`{"type":"execute","stmt":{"sql":"SELECT ?","args":[]}}`,
		`{"type":"nonsense"}`,
		execute("SELECT 2"),
	)
	require.Equal(t, "error", r.Results[0].Type)
	require.Contains(t, r.Results[0].Error.Message, "syntax error")
	require.Equal(t, "SQLITE_ERROR", r.Results[0].Error.Code)
	require.Equal(t, "error", r.Results[1].Type)
	require.NotEmpty(t, r.Results[1].Error.Message)
	require.Equal(t, "error", r.Results[2].Type)
	require.Equal(t, "PROTOCOL_ERROR", r.Results[2].Error.Code)
	require.Equal(t, []value{{int64(2)}}, r.stmt(t, 3).Rows[0])
	require.NotNil(t, r.Baton, "a failed request does not end the stream")
}

func TestPipelineStoredSQLAndSequence(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	r := pipeline(t, srv, nil,
		`{"type":"sequence","sql":"CREATE TABLE t(k); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);"}`,
		`{"type":"store_sql","sql_id":7,"sql":"SELECT count(*) FROM t"}`,
		`{"type":"execute","stmt":{"sql_id":7}}`,
		`{"type":"get_autocommit"}`,
		execute("BEGIN"),
		`{"type":"get_autocommit"}`,
		`{"type":"close_sql","sql_id":7}`,
		`{"type":"execute","stmt":{"sql_id":7}}`,
	)
	require.Equal(t, "ok", r.Results[0].Type, r.Results[0].Error)
	require.Equal(t, []value{{int64(2)}}, r.stmt(t, 2).Rows[0])
	require.True(t, *r.Results[3].Response.IsAutocommit)
	require.False(t, *r.Results[5].Response.IsAutocommit)
	require.Equal(t, "error", r.Results[7].Type)
}

func TestServerHTTP(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	for name, tc := range map[string]struct {
		method, path, body string
		status             int
	}{
		"v2 probe":          {http.MethodGet, "/v2", "", http.StatusOK},
		"v3 probe":          {http.MethodGet, "/v3", "", http.StatusNotFound},
		"pipeline with GET": {http.MethodGet, "/v2/pipeline", "", http.StatusMethodNotAllowed},
		"malformed JSON":    {http.MethodPost, "/v2/pipeline", `{"baton":null,"requests":[`, http.StatusBadRequest},
		"bad value":         {http.MethodPost, "/v2/pipeline", `{"requests":[{"type":"execute","stmt":{"sql":"SELECT ?","args":[{"type":"integer","value":"x"}]}}]}`, http.StatusBadRequest},
		"empty pipeline":    {http.MethodPost, "/v2/pipeline", `{"baton":null,"requests":[]}`, http.StatusOK},
	} {
		req, err := http.NewRequest(tc.method, srv.URL()+tc.path, strings.NewReader(tc.body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode, name)
	}
	require.Equal(t, int64(3), srv.Requests(), "POSTs to /v2/pipeline, accepted or not")
}

// TestServerPause: while paused, a pipeline waits before touching the
// database; release lets it run, and Close answers a held request 503.
func TestServerPause(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	pipeline(t, srv, nil, execute("CREATE TABLE p (n INTEGER)"), closeReq)
	ctx := context.Background()

	release := srv.Pause()
	done := make(chan int, 1)
	go func() {
		resp, err := http.Post(srv.URL()+"/v2/pipeline", "application/json",
			strings.NewReader(`{"baton":null,"requests":[`+execute("INSERT INTO p VALUES (1)")+`,`+closeReq+`]}`))
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	require.NoError(t, srv.WaitPaused(ctx, 1))
	direct, err := sql.Open("sqlite", srv.path)
	require.NoError(t, err)
	defer direct.Close()
	var n int
	require.NoError(t, direct.QueryRow("SELECT count(*) FROM p").Scan(&n))
	require.Equal(t, 0, n, "a paused request has not run")
	release()
	release() // idempotent
	require.Equal(t, http.StatusOK, <-done)
	require.NoError(t, direct.QueryRow("SELECT count(*) FROM p").Scan(&n))
	require.Equal(t, 1, n)

	// Close while a request is held: it is answered, not left hanging.
	srv.Pause()
	go func() {
		resp, err := http.Post(srv.URL()+"/v2/pipeline", "application/json",
			strings.NewReader(`{"baton":null,"requests":[`+execute("INSERT INTO p VALUES (2)")+`]}`))
		if err != nil {
			done <- 0 // the connection closed with the server
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	require.NoError(t, srv.WaitPaused(ctx, 1))
	require.NoError(t, srv.Close())
	require.Contains(t, []int{0, http.StatusServiceUnavailable}, <-done)
	require.NoError(t, direct.QueryRow("SELECT count(*) FROM p").Scan(&n))
	require.Equal(t, 1, n, "the held insert never ran")
}
