//go:build !js

// Package faultcheck holds what the tests of the worker under injected D1 faults share
// (worker/e2e_faults_test.go and the soak in worker/soak): a loopback upstream that counts executions
// per key, the rule for which answers a faulted call may get, and the money checks read from the D1 file.
//
// The rule: a call under faults answers 200 (first or replayed), or an answer that tells the caller to
// retry with the same key: 503 problem+json with Retry-After, 409 with Retry-After, or a refunded
// upstream failure (502/504 problem+json). Never a 500 or anything else.
package faultcheck

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

// Upstream is a loopback tool provider that counts executions per input key: each call's JSON body
// carries its key in "k". Paths: /echo answers the input; /slow sleeps "ms" milliseconds (at most 5 s)
// first; /fail always answers 500.
type Upstream struct {
	*httptest.Server
	mu    sync.Mutex
	execs map[string]int
}

// NewUpstream starts an Upstream on 127.0.0.1; Close stops it.
func NewUpstream() *Upstream {
	u := &Upstream{execs: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	return u
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var in struct {
		K  string `json:"k"`
		Ms int    `json:"ms"`
	}
	_ = json.Unmarshal(body, &in)
	u.mu.Lock()
	u.execs[r.URL.Path+" "+in.K]++
	u.mu.Unlock()
	switch r.URL.Path {
	case "/slow":
		select {
		case <-time.After(time.Duration(min(max(in.Ms, 0), 5000)) * time.Millisecond):
		case <-r.Context().Done():
		}
	case "/fail":
		http.Error(w, "always fails", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"path":%q,"input":%s}`, r.URL.Path, body)
}

// Executions returns how many times the upstream ran key on path (e.g. "/echo").
func (u *Upstream) Executions(path, key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.execs[path+" "+key]
}

// Tools returns a TOOLS catalog for the upstream: echo, slow and fail at 0.05 USD, with lease and
// timeout as given (for example "2s" and "3s") and a one-hour TTL.
func (u *Upstream) Tools(lease, timeout string) string {
	var tools []string
	for _, name := range []string{"echo", "slow", "fail"} {
		tools = append(tools, fmt.Sprintf(`{"name":%q,"description":"faults %s","price":"0.05","currency":"USD",
			"upstream":{"url":"%s/%s"},"lease":%q,"timeout":%q,"ttl":"1h"}`, name, name, u.URL, name, lease, timeout))
	}
	return `{"tools":[` + strings.Join(tools, ",") + `]}`
}

// Outcome names a REST answer to a call ("200", "200 replayed", "503", "409", "502 refunded",
// "502 not refunded", "504 refunded", ...) and returns an error if the rule (see the package doc) does
// not allow it. An upstream failure says "refunded" when its problem has "refunded": true; one that is
// not refunded yet asks for a retry with the same key, which inherits the charge.
func Outcome(status int, h http.Header, body []byte) (string, error) {
	problem := strings.HasPrefix(h.Get("Content-Type"), "application/problem+json")
	name := fmt.Sprint(status)
	switch {
	case status == http.StatusOK:
		if h.Get("Idempotent-Replayed") == "true" {
			name += " replayed"
		}
		return name, nil
	case (status == http.StatusServiceUnavailable || status == http.StatusConflict) && problem && h.Get("Retry-After") != "":
		return name, nil
	case (status == http.StatusBadGateway || status == http.StatusGatewayTimeout) && problem:
		var p struct {
			Refunded bool `json:"refunded"`
		}
		_ = json.Unmarshal(body, &p)
		return name + refundedWord(p.Refunded), nil
	}
	return name, fmt.Errorf("answer %d (content-type %q, Retry-After %q) breaks the rule: %.300s",
		status, h.Get("Content-Type"), h.Get("Retry-After"), body)
}

// MCPOutcome names an MCP tools/call answer: "mcp ok", "mcp ok replayed", "mcp isError <status>" (the
// problem's status in structuredContent; for 502 and 504, followed by "refunded" or "not refunded" as
// Outcome does) or "mcp http <status>" (a JSON-RPC error on a non-200 HTTP
// answer, as when the store fails during authentication). It returns an error if the answer is not
// one the rule allows: an isError with a status the rule allows for REST, or an HTTP 503 with
// Retry-After.
func MCPOutcome(status int, h http.Header, body []byte) (string, error) {
	var msg struct {
		Result *struct {
			IsError           bool           `json:"isError"`
			StructuredContent map[string]any `json:"structuredContent"`
			Meta              map[string]any `json:"_meta"`
		} `json:"result"`
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		return fmt.Sprintf("mcp http %d", status), fmt.Errorf("mcp answer %d is not JSON-RPC: %.300s", status, body)
	}
	switch {
	case status == http.StatusOK && msg.Result != nil && !msg.Result.IsError:
		if msg.Result.Meta["io.toolgate/replayed"] == true {
			return "mcp ok replayed", nil
		}
		return "mcp ok", nil
	case status == http.StatusOK && msg.Result != nil:
		st, _ := msg.Result.StructuredContent["status"].(float64)
		name := fmt.Sprintf("mcp isError %d", int(st))
		switch int(st) {
		case http.StatusServiceUnavailable, http.StatusConflict:
			return name, nil
		case http.StatusBadGateway, http.StatusGatewayTimeout:
			return name + refundedWord(msg.Result.StructuredContent["refunded"] == true), nil
		}
		return name, fmt.Errorf("mcp isError %d breaks the rule: %.300s", int(st), body)
	case status == http.StatusServiceUnavailable && h.Get("Retry-After") != "" && msg.Error != nil:
		return fmt.Sprintf("mcp http %d", status), nil
	}
	return fmt.Sprintf("mcp http %d", status), fmt.Errorf("mcp answer %d breaks the rule: %.300s", status, body)
}

func refundedWord(refunded bool) string {
	if refunded {
		return " refunded"
	}
	return " not refunded"
}

// Money is what the D1 file says about the money path.
type Money struct {
	// Keys maps each idempotency record's key to its net charges (charges minus refunds).
	Keys map[string]KeyMoney
	// DoubleCharges counts records whose net charges exceed 1, or exceed 0 for a failed record.
	DoubleCharges int
	// Stranded counts records still in_progress whose lease expired before now.
	Stranded int
	// StrandedCharged counts the stranded records that still hold a charge (net charges 1); the others
	// were refunded, and only their status is left behind.
	StrandedCharged int
}

// KeyMoney is one record's status and net charges.
type KeyMoney struct {
	Status string
	Net    int
}

// CheckMoney runs the store's invariant checks (Σ entries = balance and the charge invariant, see
// store.Store.CheckInvariants) on db, the D1 file, and reads every record's net charges and the
// stranded records at now. It returns the invariant checks' error, or a read's.
func CheckMoney(ctx context.Context, db *sql.DB, now time.Time) (Money, error) {
	if err := sqlstore.New(store.NewSQLClient("d1file", db)).CheckInvariants(ctx); err != nil {
		return Money{}, fmt.Errorf("invariants: %w", err)
	}
	rows, err := db.QueryContext(ctx, `SELECT r.key, r.status, r.lease_expires_at,
		(SELECT count(*) FROM ledger_entries e WHERE e.idem_key = r.key AND e.kind = 'charge') -
		(SELECT count(*) FROM ledger_entries e WHERE e.idem_key = r.key AND e.kind = 'refund')
		FROM idem_records r`)
	if err != nil {
		return Money{}, fmt.Errorf("read records: %w", err)
	}
	defer rows.Close()
	m := Money{Keys: map[string]KeyMoney{}}
	for rows.Next() {
		var (
			key, status string
			lease       int64
			net         int
		)
		if err := rows.Scan(&key, &status, &lease, &net); err != nil {
			return Money{}, fmt.Errorf("read records: %w", err)
		}
		m.Keys[key] = KeyMoney{Status: status, Net: net}
		if net > 1 || (status == "failed" && net > 0) || net < 0 {
			m.DoubleCharges++
		}
		if status == "in_progress" && lease <= now.UnixMilli() {
			m.Stranded++
			if net > 0 {
				m.StrandedCharged++
			}
		}
	}
	return m, rows.Err()
}
