package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
)

// DbClient is the seam between the SQL backend and an engine: native
// SQLite, libSQL over HTTP, or D1. Each call is one round trip.
//
// Query returns every row, fully read. Values are int64, float64, string,
// []byte or nil; engines that hand integers back as float64 (D1) are
// normalised by the reader, not here.
type DbClient interface {
	// Exec runs one statement and returns the number of rows it changed.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	// Query runs one statement (a SELECT, or a write with RETURNING) and
	// returns its rows.
	Query(ctx context.Context, query string, args ...any) ([][]any, error)
}

// Stmt is one statement of a batch.
type Stmt struct {
	Query string
	Args  []any
}

// Batcher is a DbClient that can also run several statements in order as
// one atomic unit (all or nothing, nothing interleaved) in one round trip:
// D1's batch, or a transaction on an embedded SQLite. Batch returns each
// statement's rows (nil for statements that return none); if one statement
// fails, nothing is applied and the error is returned.
//
// Engines that would need a round trip per statement for that (a
// transaction over HTTP) do not implement it, and the SQL backend makes the
// calls one by one instead.
type Batcher interface {
	DbClient
	Batch(ctx context.Context, stmts []Stmt) ([][][]any, error)
}

// BatcherOf returns c as a Batcher if it can batch. A wrapper that
// implements Batch only to forward it (CountingClient) says whether it can
// with a CanBatch method.
func BatcherOf(c DbClient) (Batcher, bool) {
	b, ok := c.(Batcher)
	if !ok {
		return nil, false
	}
	if w, ok := c.(interface{ CanBatch() bool }); ok && !w.CanBatch() {
		return nil, false
	}
	return b, true
}

// SQLClient adapts a *sql.DB to DbClient. Every engine toolgate supports has
// a database/sql driver, so the engine packages only open the DB.
type SQLClient struct {
	name    string
	db      *sql.DB
	txBatch bool
}

var _ Batcher = (*SQLClient)(nil)

// NewSQLClient returns a DbClient over db. name prefixes error messages
// ("sqlite", "libsql", "d1").
func NewSQLClient(name string, db *sql.DB) *SQLClient {
	return &SQLClient{name: name, db: db}
}

// NewTxSQLClient is NewSQLClient for an engine where a transaction costs
// no extra round trips (an embedded SQLite): its Batch runs the statements
// in one transaction, so it is a Batcher. The driver must start write
// transactions with the write lock taken (SQLite's BEGIN IMMEDIATE), or
// concurrent batches fail instead of waiting.
func NewTxSQLClient(name string, db *sql.DB) *SQLClient {
	return &SQLClient{name: name, db: db, txBatch: true}
}

// CanBatch reports whether c was made by NewTxSQLClient.
func (c *SQLClient) CanBatch() bool { return c.txBatch }

// Batch implements Batcher with one transaction. It fails on a client
// made by NewSQLClient.
func (c *SQLClient) Batch(ctx context.Context, stmts []Stmt) (out [][][]any, err error) {
	if !c.txBatch {
		return nil, fmt.Errorf("%s: batch: not a transactional client", c.name)
	}
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: begin: %w", c.name, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	out = make([][][]any, len(stmts))
	for i, st := range stmts {
		rows, err := tx.QueryContext(ctx, st.Query, st.Args...)
		if err != nil {
			return nil, fmt.Errorf("%s: batch statement %d: %w", c.name, i+1, err)
		}
		if out[i], err = readRows(rows); err != nil {
			return nil, fmt.Errorf("%s: batch statement %d: %w", c.name, i+1, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("%s: commit: %w", c.name, err)
	}
	return out, nil
}

// DB returns the underlying *sql.DB.
func (c *SQLClient) DB() *sql.DB { return c.db }

// Exec implements DbClient.
func (c *SQLClient) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := c.db.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: exec: %w", c.name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("%s: rows affected: %w", c.name, err)
	}
	return n, nil
}

// Query implements DbClient.
func (c *SQLClient) Query(ctx context.Context, query string, args ...any) ([][]any, error) {
	rows, err := c.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: query: %w", c.name, err)
	}
	out, err := readRows(rows)
	if err != nil {
		return nil, fmt.Errorf("%s: query: %w", c.name, err)
	}
	return out, nil
}

// readRows reads and closes rows.
func readRows(rows *sql.Rows) ([][]any, error) {
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("columns: %w", err)
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rows: %w", err)
	}
	return out, nil
}

// CountingClient wraps a DbClient and counts round trips, in total and per
// request context (see WithRoundTrips). Tests assert the counts; the handler
// logs them per call.
type CountingClient struct {
	Inner DbClient
	n     atomic.Int64
}

var _ Batcher = (*CountingClient)(nil)

// Count returns the number of round trips so far.
func (c *CountingClient) Count() int64 { return c.n.Load() }

// Exec implements DbClient.
func (c *CountingClient) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	c.n.Add(1)
	countRoundTrip(ctx)
	return c.Inner.Exec(ctx, query, args...)
}

// Query implements DbClient.
func (c *CountingClient) Query(ctx context.Context, query string, args ...any) ([][]any, error) {
	c.n.Add(1)
	countRoundTrip(ctx)
	return c.Inner.Query(ctx, query, args...)
}

// CanBatch reports whether Inner can batch.
func (c *CountingClient) CanBatch() bool {
	_, ok := BatcherOf(c.Inner)
	return ok
}

// Batch implements Batcher as one round trip when Inner can batch.
func (c *CountingClient) Batch(ctx context.Context, stmts []Stmt) ([][][]any, error) {
	b, ok := BatcherOf(c.Inner)
	if !ok {
		return nil, fmt.Errorf("batch: %T cannot batch", c.Inner)
	}
	c.n.Add(1)
	countRoundTrip(ctx)
	return b.Batch(ctx, stmts)
}

// RoundTrips counts the DbClient round trips made on behalf of one request.
type RoundTrips struct{ n atomic.Int64 }

// Count returns the round trips counted so far.
func (r *RoundTrips) Count() int64 {
	if r == nil {
		return 0
	}
	return r.n.Load()
}

type roundTripsKey struct{}

// WithRoundTrips returns a context whose round trips through a
// CountingClient are counted in the returned *RoundTrips.
func WithRoundTrips(ctx context.Context) (context.Context, *RoundTrips) {
	rt := &RoundTrips{}
	return context.WithValue(ctx, roundTripsKey{}, rt), rt
}

func countRoundTrip(ctx context.Context) {
	if rt, ok := ctx.Value(roundTripsKey{}).(*RoundTrips); ok {
		rt.n.Add(1)
	}
}
