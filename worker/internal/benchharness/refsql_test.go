//go:build !js

package benchharness

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

var update = flag.Bool("update", false, "rewrite worker/js/reference/sql.mjs from store/sqlstore")

// recorder is a DbClient that remembers the text of every statement.
type recorder struct {
	inner store.DbClient
	mu    sync.Mutex
	sql   []string
}

func (r *recorder) record(q string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sql = append(r.sql, q)
}

func (r *recorder) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	r.record(q)
	return r.inner.Exec(ctx, q, args...)
}

func (r *recorder) Query(ctx context.Context, q string, args ...any) ([][]any, error) {
	r.record(q)
	return r.inner.Query(ctx, q, args...)
}

func (r *recorder) CanBatch() bool {
	_, ok := store.BatcherOf(r.inner)
	return ok
}

func (r *recorder) Batch(ctx context.Context, stmts []store.Stmt) ([][][]any, error) {
	for _, st := range stmts {
		r.record(st.Query)
	}
	b, _ := store.BatcherOf(r.inner)
	return b.Batch(ctx, stmts)
}

// last returns the statements recorded since the previous call.
func (r *recorder) last() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.sql
	r.sql = nil
	return out
}

// referenceSQL runs one paid call's store path on SQLite and returns the statements sqlstore sent, named
// as the JS reference worker names them.
func referenceSQL(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "ref.db"))
	require.NoError(t, err)
	require.NoError(t, sqlstore.Migrate(ctx, db))
	rec := &recorder{inner: db}
	s := sqlstore.New(rec)
	now := time.UnixMilli(1_700_000_000_000)
	one := func(name string, stmts []string) string {
		require.Len(t, stmts, 1, name)
		return stmts[0]
	}
	out := map[string]string{}

	require.NoError(t, s.CreateCaller(ctx, store.Caller{ID: "c", Name: "c", KeyHash: []byte{1}, CreatedAt: now}))
	out["createCaller"] = one("create caller", rec.last())
	_, err = s.CallerByKeyHash(ctx, []byte{1}, now)
	require.NoError(t, err)
	out["callerByKeyHash"] = one("caller by key hash", rec.last())
	_, err = s.Credit(ctx, store.CreditParams{Caller: "c", Currency: "USD", Amount: 100, Reference: "r", Now: now})
	require.NoError(t, err)
	// The credit and the repayment of a debt, in one batch.
	credit := rec.last()
	require.Len(t, credit, 2, "credit")
	out["credit"] = credit[0]

	p := store.ClaimParams{Key: "k", Owner: "o", Fingerprint: "f", Now: now, Lease: time.Minute, TTL: time.Hour}
	cr, err := s.Claim(ctx, p)
	require.NoError(t, err)
	require.Equal(t, store.OutcomeClaimed, cr.Outcome)
	out["claim"] = one("claim", rec.last())
	f := store.Fence{Key: "k", Owner: "o", Generation: cr.Record.Generation}
	// A paid call's first claim: claim and chargeClaimed in one batch.
	ccr, err := s.ClaimCharge(ctx, store.ClaimChargeParams{ClaimParams: store.ClaimParams{Key: "k2", Owner: "o2",
		Fingerprint: "f", Now: now, Lease: time.Minute, TTL: time.Hour}, Caller: "c", Currency: "USD", Amount: 1})
	require.NoError(t, err)
	require.NoError(t, ccr.ChargeErr)
	require.True(t, ccr.Charge.Charged)
	batch := rec.last()
	require.Len(t, batch, 2, "claim and charge")
	require.Equal(t, out["claim"], batch[0])
	out["chargeClaimed"] = batch[1]
	_, err = s.Charge(ctx, store.ChargeParams{Fence: f, Caller: "c", Currency: "USD", Amount: 1, Now: now})
	require.NoError(t, err)
	out["charge"] = one("charge", rec.last())
	require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: f, Now: now,
		Response: store.Response{StatusCode: 200, ContentType: "application/json", Body: []byte(`{}`)}}))
	out["complete"] = one("complete", rec.last())
	// A paid call's complete, as the engine makes it: with the call's usage counters, in one batch.
	u := store.Usage{UsageKey: store.UsageKey{Hour: now, Caller: "c", Tool: "t", Currency: "USD"}, Calls: 1, LastAt: now}
	require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: store.Fence{Key: "k2", Owner: "o2", Generation: ccr.Record.Generation},
		Now: now, Response: store.Response{StatusCode: 200, ContentType: "application/json", Body: []byte(`{}`)}, Usage: &u}))
	batch = rec.last()
	require.Len(t, batch, 2, "complete and count")
	out["completeCounted"], out["countUsage"] = batch[0], batch[1]
	_, err = s.Peek(ctx, "k")
	require.NoError(t, err)
	out["peek"] = one("peek", rec.last())
	return out
}

var sqlLine = regexp.MustCompile(`(?m)^export const (\w+) = (".*");$`)

// TestReferenceSQL keeps the JS reference worker's SQL identical to what store/sqlstore sends.
func TestReferenceSQL(t *testing.T) {
	t.Parallel()
	want := referenceSQL(t)
	path := filepath.Join(edgetest.RepoRoot(t), "worker", "js", "reference", "sql.mjs")
	if *update {
		var b bytes.Buffer
		b.WriteString("// Generated by `go test ./worker/internal/benchharness -run TestReferenceSQL -update`: the statements\n")
		b.WriteString("// store/sqlstore sends for a paid call, verbatim. Do not edit.\n")
		for _, name := range []string{"callerByKeyHash", "createCaller", "credit", "claim", "chargeClaimed", "charge", "complete", "completeCounted", "countUsage", "peek"} {
			var lit bytes.Buffer
			enc := json.NewEncoder(&lit)
			enc.SetEscapeHTML(false)
			require.NoError(t, enc.Encode(want[name]))
			fmt.Fprintf(&b, "export const %s = %s;\n", name, bytes.TrimSpace(lit.Bytes()))
		}
		require.NoError(t, os.WriteFile(path, b.Bytes(), 0o644))
	}
	src, err := os.ReadFile(path)
	require.NoError(t, err)
	got := map[string]string{}
	for _, m := range sqlLine.FindAllSubmatch(src, -1) {
		var s string
		require.NoError(t, json.Unmarshal(m[2], &s))
		got[string(m[1])] = s
	}
	require.Equal(t, want, got, "worker/js/reference/sql.mjs differs from store/sqlstore: rerun with -update, then check the bind order in worker/js/reference/worker.mjs")
}
