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

// SQLClient adapts a *sql.DB to DbClient. Every engine toolgate supports has
// a database/sql driver, so the engine packages only open the DB.
type SQLClient struct {
	name string
	db   *sql.DB
}

var _ DbClient = (*SQLClient)(nil)

// NewSQLClient returns a DbClient over db. name prefixes error messages
// ("sqlite", "libsql", "d1").
func NewSQLClient(name string, db *sql.DB) *SQLClient {
	return &SQLClient{name: name, db: db}
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
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("%s: columns: %w", c.name, err)
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("%s: scan: %w", c.name, err)
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: rows: %w", c.name, err)
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

var _ DbClient = (*CountingClient)(nil)

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
