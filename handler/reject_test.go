//go:build !js

package handler_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/safejson"
	"github.com/toolgate/toolgate-go/store"
)

// snapshot is the state a rejected request must leave unchanged.
type snapshot struct {
	upstreamCalls int64
	entries       []store.Entry
	record        *store.Record
}

func (e *env) snapshot(c caller, tool, key string) snapshot {
	e.t.Helper()
	es, err := e.st.Entries(context.Background(), store.EntryFilter{})
	require.NoError(e.t, err)
	s := snapshot{upstreamCalls: e.up.calls.Load(), entries: es}
	if rec, err := e.record(c, tool, key); err == nil {
		s.record = &rec
	} else {
		require.ErrorIs(e.t, err, store.ErrNotFound)
	}
	return s
}

// TestEveryRejectionLeavesStateUnchanged covers each 4xx of the error
// table: the status, the problem type, and no change to the upstream count,
// the ledger or the key's record.
func TestEveryRejectionLeavesStateUnchanged(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("k", 256)
	cases := map[string]struct {
		opts    []option
		credit  string                              // alice's credit, "1.00" by default
		prepare func(e *env, alice caller)          // state before the request
		send    func(e *env, alice caller) response // the rejected request
		key     string                              // record to compare ("k" by default)
		tool    string                              // its tool ("echo" by default)
		status  int
		slug    string
		check   func(t *testing.T, r response, m map[string]any) // extra checks
	}{
		"400 missing Idempotency-Key": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", "", `{}`) },
			status: http.StatusBadRequest, slug: "invalid-idempotency-key",
		},
		"400 Idempotency-Key too long": {
			send: func(e *env, a caller) response { return e.call(a.key, "echo", long, `{}`) },
			key:  long, status: http.StatusBadRequest, slug: "invalid-idempotency-key",
		},
		"400 Idempotency-Key not ASCII": {
			send: func(e *env, a caller) response { return e.call(a.key, "echo", "clé", `{}`) },
			key:  "clé", status: http.StatusBadRequest, slug: "invalid-idempotency-key",
		},
		"400 two Idempotency-Keys": {
			send: func(e *env, a caller) response {
				req, _ := http.NewRequest(http.MethodPost, e.gw.URL+"/v1/tools/echo/call", strings.NewReader(`{}`))
				req.Header.Set("Authorization", "Bearer "+a.key)
				req.Header.Add("Idempotency-Key", "k")
				req.Header.Add("Idempotency-Key", "j")
				res, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				defer res.Body.Close()
				return response{status: res.StatusCode, header: res.Header, body: readAll(t, res)}
			},
			status: http.StatusBadRequest, slug: "invalid-idempotency-key",
		},
		"400 invalid JSON": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", "k", `{"a":`) },
			status: http.StatusBadRequest, slug: "invalid-json",
		},
		"400 trailing data": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", "k", `{} {}`) },
			status: http.StatusBadRequest, slug: "invalid-json",
		},
		"400 empty body": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", "k", ``) },
			status: http.StatusBadRequest, slug: "invalid-json",
		},
		"400 two Idempotency-Keys joined by a proxy": {
			send: func(e *env, a caller) response { return e.call(a.key, "echo", "k, j", `{}`) },
			key:  "k, j", status: http.StatusBadRequest, slug: "invalid-idempotency-key",
			check: func(t *testing.T, r response, m map[string]any) {
				require.Contains(t, m["detail"], "two Idempotency-Key")
			},
		},
		"400 one Idempotency-Key sent twice, joined": {
			send: func(e *env, a caller) response { return e.call(a.key, "echo", "k, k", `{}`) },
			key:  "k, k", status: http.StatusBadRequest, slug: "invalid-idempotency-key",
		},
		"400 two quoted Idempotency-Keys joined": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", `"k", "j"`, `{}`) },
			status: http.StatusBadRequest, slug: "invalid-idempotency-key",
			check: func(t *testing.T, r response, m map[string]any) {
				require.Contains(t, m["detail"], "more than one key")
			},
		},
		"400 quoted Idempotency-Key without its closing quote": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", `"k`, `{}`) },
			status: http.StatusBadRequest, slug: "invalid-idempotency-key",
		},
		"400 quoted Idempotency-Key with parameters": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", `"k";a=1`, `{}`) },
			status: http.StatusBadRequest, slug: "invalid-idempotency-key",
		},
		"400 JSON nested 10,000 arrays deep": {
			send: func(e *env, a caller) response {
				return e.call(a.key, "echo", "k", strings.Repeat("[", 10000)+strings.Repeat("]", 10000))
			},
			status: http.StatusBadRequest, slug: "invalid-json",
			check: func(t *testing.T, r response, m map[string]any) { require.Contains(t, m["detail"], "deeper than 128") },
		},
		"400 JSON nested 10,000 objects deep": {
			send: func(e *env, a caller) response {
				return e.call(a.key, "echo", "k", strings.Repeat(`{"a":`, 10000)+"1"+strings.Repeat("}", 10000))
			},
			status: http.StatusBadRequest, slug: "invalid-json",
		},
		"400 JSON one level past the limit": {
			send: func(e *env, a caller) response {
				return e.call(a.key, "echo", "k", strings.Repeat("[", safejson.MaxDepth+1)+strings.Repeat("]", safejson.MaxDepth+1))
			},
			status: http.StatusBadRequest, slug: "invalid-json",
		},
		"400 lone high surrogate": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", "k", `{"t":"\ud800"}`) },
			status: http.StatusBadRequest, slug: "invalid-json",
			check: func(t *testing.T, r response, m map[string]any) { require.Contains(t, m["detail"], "surrogate") },
		},
		"400 lone low surrogate": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", "k", `{"t":"\udc00"}`) },
			status: http.StatusBadRequest, slug: "invalid-json",
		},
		"400 high surrogate without its low half": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", "k", `{"t":"\ud800\u0041"}`) },
			status: http.StatusBadRequest, slug: "invalid-json",
		},
		"400 lone surrogate in an object key": {
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", "k", `{"\udbff":1}`) },
			status: http.StatusBadRequest, slug: "invalid-json",
		},
		"404 unclean path, not a redirect": {
			send: func(e *env, a caller) response {
				return e.do(http.MethodPost, "/v1/tools/x/../echo/call", a.key, map[string]string{"Idempotency-Key": "k"}, `{}`)
			},
			status: http.StatusNotFound, slug: "not-found",
		},
		"404 double slash": {
			send: func(e *env, a caller) response {
				return e.do(http.MethodPost, "/v1/tools//echo/call", a.key, map[string]string{"Idempotency-Key": "k"}, `{}`)
			},
			status: http.StatusNotFound, slug: "not-found",
		},
		"401 no caller key": {
			send:   func(e *env, a caller) response { return e.call("", "echo", "k", `{}`) },
			status: http.StatusUnauthorized, slug: "unauthorized",
		},
		"401 unknown caller key": {
			send:   func(e *env, a caller) response { return e.call(a.key+"x", "echo", "k", `{}`) },
			status: http.StatusUnauthorized, slug: "unauthorized",
		},
		"401 admin token is no caller key": {
			send:   func(e *env, a caller) response { return e.call(adminToken, "echo", "k", `{}`) },
			status: http.StatusUnauthorized, slug: "unauthorized",
		},
		"402 insufficient balance": {
			credit: "0.04",
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", "k", `{}`) },
			status: http.StatusPaymentRequired, slug: "insufficient-funds",
			check: func(t *testing.T, r response, m map[string]any) {
				require.Equal(t, "0.05", m["price"])
				require.Equal(t, "0.04", m["balance"])
			},
		},
		"404 unknown tool": {
			send: func(e *env, a caller) response { return e.call(a.key, "nope", "k", `{}`) },
			tool: "nope", status: http.StatusNotFound, slug: "unknown-tool",
		},
		"405 wrong method": {
			send: func(e *env, a caller) response {
				return e.do(http.MethodGet, "/v1/tools/echo/call", a.key, map[string]string{"Idempotency-Key": "k"}, "")
			},
			status: http.StatusMethodNotAllowed, slug: "method-not-allowed",
			check: func(t *testing.T, r response, m map[string]any) { require.Equal(t, "POST", r.header.Get("Allow")) },
		},
		"409 in flight, fail fast": {
			opts: []option{func(c *handler.Config) { c.WaitForInProgress = -1 }},
			prepare: func(e *env, a caller) {
				go e.call(a.key, "block", "k", `{}`)
				<-e.up.started
			},
			send: func(e *env, a caller) response { return e.call(a.key, "block", "k", `{}`) },
			tool: "block", status: http.StatusConflict, slug: "in-progress",
			check: func(t *testing.T, r response, m map[string]any) {
				require.NotEmpty(t, r.header.Get("Retry-After"))
				require.EqualValues(t, m["retryAfter"], atoi(t, r.header.Get("Retry-After")))
			},
		},
		"409 in flight past the wait deadline": {
			opts: []option{func(c *handler.Config) { c.WaitForInProgress = 150_000_000 }}, // 150 ms
			prepare: func(e *env, a caller) {
				go e.call(a.key, "block", "k", `{}`)
				<-e.up.started
			},
			send: func(e *env, a caller) response { return e.call(a.key, "block", "k", `{}`) },
			tool: "block", status: http.StatusConflict, slug: "in-progress",
			check: func(t *testing.T, r response, m map[string]any) { require.NotEmpty(t, r.header.Get("Retry-After")) },
		},
		"413 body over the limit": {
			opts: []option{func(c *handler.Config) { c.MaxBodyBytes = 256 }},
			send: func(e *env, a caller) response {
				return e.call(a.key, "echo", "k", `{"a":"`+strings.Repeat("x", 300)+`"}`)
			},
			status: http.StatusRequestEntityTooLarge, slug: "body-too-large",
		},
		"422 same key, different body": {
			prepare: func(e *env, a caller) {
				require.Equal(t, http.StatusOK, e.call(a.key, "echo", "k", `{"q":1}`).status)
			},
			send:   func(e *env, a caller) response { return e.call(a.key, "echo", "k", `{"q":2}`) },
			status: http.StatusUnprocessableEntity, slug: "idempotency-key-mismatch",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, tc.opts...)
			credit := tc.credit
			if credit == "" {
				credit = "1.00"
			}
			alice := e.newCaller("alice", credit)
			if tc.prepare != nil {
				tc.prepare(e, alice)
			}
			key, tool := tc.key, tc.tool
			if key == "" {
				key = "k"
			}
			if tool == "" {
				tool = "echo"
			}
			before := e.snapshot(alice, tool, key)
			r := tc.send(e, alice)
			m := r.problem(t, tc.status, tc.slug)
			if tc.check != nil {
				tc.check(t, r, m)
			}
			after := e.snapshot(alice, tool, key)
			require.Equal(t, before.upstreamCalls, after.upstreamCalls, "upstream calls")
			require.Equal(t, before.entries, after.entries, "ledger")
			if tc.status == http.StatusPaymentRequired {
				// The claim is released as failed, uncharged, so a retry
				// after a top-up executes.
				require.Nil(t, before.record)
				require.Equal(t, store.StatusFailed, after.record.Status)
				require.Equal(t, store.ChargeNone, after.record.Charge.State)
			} else {
				require.Equal(t, before.record, after.record, "record")
			}
			e.checkInvariants()
		})
	}
}

func readAll(t *testing.T, res *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return b
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}
