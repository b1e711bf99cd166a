//go:build !js

package hranatest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
)

// stream is one Hrana stream: a dedicated SQLite connection, so a transaction
// begun in one pipeline request carries on in the next. Whoever holds the
// current baton owns the stream; no two goroutines use it at once.
type stream struct {
	conn     *sql.Conn
	lastUsed time.Time
	sqls     map[int32]string // stored by store_sql, scoped to the stream

	// totalChanges is total_changes() after the last statement, or -1 if
	// unknown. A statement changed rows only if total_changes() moved:
	// changes() keeps the count of the last INSERT, UPDATE or DELETE, so
	// after a SELECT or a DDL statement it would report a stale count.
	totalChanges int64
}

// handle runs one request of a pipeline and returns its result.
func (st *stream) handle(ctx context.Context, req streamRequest) streamResult {
	resp, err := st.dispatch(ctx, req)
	if err != nil {
		return streamResult{Type: "error", Error: toHranaError(err)}
	}
	return streamResult{Type: "ok", Response: resp}
}

func (st *stream) dispatch(ctx context.Context, req streamRequest) (*streamResponse, error) {
	resp := &streamResponse{Type: req.Type}
	switch req.Type {
	case "execute":
		if req.Stmt == nil {
			return nil, protocolError("execute request without stmt")
		}
		res, err := st.execute(ctx, req.Stmt)
		if err != nil {
			return nil, err
		}
		resp.Result = res
	case "batch":
		if req.Batch == nil {
			return nil, protocolError("batch request without batch")
		}
		res, err := st.batch(ctx, req.Batch)
		if err != nil {
			return nil, err
		}
		resp.Result = res
	case "sequence":
		query, err := st.sqlText(req.SQL, req.SQLID)
		if err != nil {
			return nil, err
		}
		st.totalChanges = -1
		if _, err := st.conn.ExecContext(ctx, query); err != nil {
			return nil, err
		}
	case "store_sql":
		if req.SQL == nil || req.SQLID == nil {
			return nil, protocolError("store_sql request needs sql and sql_id")
		}
		if _, ok := st.sqls[*req.SQLID]; ok {
			return nil, protocolError(fmt.Sprintf("sql_id %d is already in use", *req.SQLID))
		}
		st.sqls[*req.SQLID] = *req.SQL
	case "close_sql":
		if req.SQLID != nil {
			delete(st.sqls, *req.SQLID)
		}
	case "get_autocommit":
		auto, err := st.autocommit(ctx)
		if err != nil {
			return nil, err
		}
		resp.IsAutocommit = &auto
	default:
		return nil, protocolError(fmt.Sprintf("unsupported request type %q", req.Type))
	}
	return resp, nil
}

// execute runs one statement and reports its rows and its own row changes.
func (st *stream) execute(ctx context.Context, s *stmt) (*stmtResult, error) {
	if st.totalChanges < 0 {
		if err := st.conn.QueryRowContext(ctx, "SELECT total_changes()").Scan(&st.totalChanges); err != nil {
			return nil, fmt.Errorf("read total_changes: %w", err)
		}
	}
	res, err := st.query(ctx, s)
	if err != nil {
		// A failed statement may have changed rows before it was undone.
		st.totalChanges = -1
		return nil, err
	}
	var changes, rowid, total int64
	err = st.conn.QueryRowContext(ctx, "SELECT changes(), last_insert_rowid(), total_changes()").Scan(&changes, &rowid, &total)
	if err != nil {
		st.totalChanges = -1
		return nil, fmt.Errorf("read changes: %w", err)
	}
	if total != st.totalChanges {
		res.AffectedRowCount = changes
	}
	st.totalChanges = total
	id := strconv.FormatInt(rowid, 10)
	res.LastInsertRowid = &id
	return res, nil
}

// query runs the statement through a query, so RETURNING rows come back, and
// reads every row so the statement runs to completion even if want_rows is
// false.
func (st *stream) query(ctx context.Context, s *stmt) (*stmtResult, error) {
	query, err := st.sqlText(s.SQL, s.SQLID)
	if err != nil {
		return nil, err
	}
	args := make([]any, 0, len(s.Args)+len(s.NamedArgs))
	for _, a := range s.Args {
		args = append(args, a.v)
	}
	for _, a := range s.NamedArgs {
		// SQLite names include the prefix; the Go client sends names without.
		args = append(args, sql.Named(strings.TrimLeft(a.Name, ":@$"), a.Value.v))
	}
	wantRows := s.WantRows == nil || *s.WantRows

	rows, err := st.conn.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, fmt.Errorf("read columns: %w", err)
	}
	res := &stmtResult{Cols: make([]col, len(types)), Rows: [][]value{}}
	for i, t := range types {
		name, decltype := t.Name(), t.DatabaseTypeName()
		res.Cols[i].Name = &name
		if decltype != "" {
			res.Cols[i].Decltype = &decltype
		}
	}
	dest := make([]any, len(types))
	ptrs := make([]any, len(types))
	for i := range dest {
		ptrs[i] = &dest[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("scan row: %w", err)
		}
		if !wantRows {
			continue
		}
		row := make([]value, len(dest))
		for i, d := range dest {
			if row[i], err = valueOf(d); err != nil {
				return nil, err
			}
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Close before reading changes(): the last step of a write with
	// RETURNING is what finishes (and, in autocommit mode, commits) it.
	if err := rows.Close(); err != nil {
		return nil, err
	}
	return res, nil
}

// batch runs the steps in order, skipping a step whose condition is false.
// A failing step is reported in step_errors, not as an error of the request.
func (st *stream) batch(ctx context.Context, b *batch) (*batchResult, error) {
	res := &batchResult{
		StepResults: make([]*stmtResult, len(b.Steps)),
		StepErrors:  make([]*hranaError, len(b.Steps)),
	}
	for i := range b.Steps {
		step := &b.Steps[i]
		if step.Condition != nil {
			ok, err := st.eval(ctx, step.Condition, res, i)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		r, err := st.execute(ctx, &step.Stmt)
		if err != nil {
			res.StepErrors[i] = toHranaError(err)
			continue
		}
		res.StepResults[i] = r
	}
	return res, nil
}

// eval evaluates the condition of step current against the earlier steps.
func (st *stream) eval(ctx context.Context, c *batchCond, res *batchResult, current int) (bool, error) {
	switch c.Type {
	case "ok", "error":
		if c.Step == nil || *c.Step < 0 || *c.Step >= current {
			return false, protocolError(fmt.Sprintf("condition of step %d refers to a step that has not run before it", current))
		}
		if c.Type == "ok" {
			return res.StepResults[*c.Step] != nil, nil
		}
		return res.StepErrors[*c.Step] != nil, nil
	case "not":
		if c.Cond == nil {
			return false, protocolError("not condition without cond")
		}
		ok, err := st.eval(ctx, c.Cond, res, current)
		return !ok, err
	case "and", "or":
		isAnd := c.Type == "and"
		for i := range c.Conds {
			ok, err := st.eval(ctx, &c.Conds[i], res, current)
			if err != nil {
				return false, err
			}
			if ok != isAnd {
				return ok, nil
			}
		}
		return isAnd, nil
	case "is_autocommit":
		return st.autocommit(ctx)
	default:
		return false, protocolError(fmt.Sprintf("unknown condition type %q", c.Type))
	}
}

// autocommit reports whether the connection is outside an explicit
// transaction. database/sql does not expose sqlite3_get_autocommit, so it
// tries BEGIN: that fails only inside a transaction, and a deferred BEGIN
// followed by ROLLBACK takes no lock and changes nothing.
func (st *stream) autocommit(ctx context.Context) (bool, error) {
	if _, err := st.conn.ExecContext(ctx, "BEGIN"); err != nil {
		if strings.Contains(err.Error(), "within a transaction") {
			return false, nil
		}
		return false, fmt.Errorf("probe autocommit: %w", err)
	}
	if _, err := st.conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		return false, fmt.Errorf("probe autocommit: %w", err)
	}
	return true, nil
}

// sqlText returns the SQL given inline or stored earlier under sqlID.
func (st *stream) sqlText(text *string, sqlID *int32) (string, error) {
	switch {
	case text != nil && sqlID == nil:
		return *text, nil
	case text == nil && sqlID != nil:
		if s, ok := st.sqls[*sqlID]; ok {
			return s, nil
		}
		return "", protocolError(fmt.Sprintf("sql_id %d is not stored", *sqlID))
	default:
		return "", protocolError("exactly one of sql and sql_id must be given")
	}
}

func protocolError(msg string) error {
	return &hranaError{Message: "hranatest: " + msg, Code: "PROTOCOL_ERROR"}
}

// toHranaError turns err into the Error structure of the spec. SQLite errors
// keep the driver's message (which contains SQLite's own) and get a code such
// as SQLITE_CONSTRAINT.
func toHranaError(err error) *hranaError {
	if he, ok := errors.AsType[*hranaError](err); ok {
		return he
	}
	out := &hranaError{Message: err.Error()}
	if se, ok := errors.AsType[*sqlite.Error](err); ok {
		desc := sqlite.ErrorCodeString[se.Code()&0xff] // e.g. "... (SQLITE_CONSTRAINT)"
		if i := strings.LastIndexByte(desc, '('); i >= 0 {
			out.Code = strings.TrimSuffix(desc[i+1:], ")")
		}
	}
	return out
}
