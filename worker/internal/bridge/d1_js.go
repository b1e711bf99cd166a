//go:build js && wasm

package bridge

import (
	"context"
	"fmt"
	"syscall/js"

	"github.com/toolgate/toolgate-go/store"
)

// D1 runs statements on a D1 binding. Its Exec and Query make it a store.DbClient, like store/d1's
// client over syumai's database/sql driver, with three differences that matter in a long-lived
// instance: the binding is looked up in the env of each call's event (see Env), every statement is one
// call into the shim (prepare, bind and run happen there), and awaiting it creates no js.Func (syumai's
// driver leaks one per statement, see calls_js.go).
//
// Bound values may be nil, bool, int, int64, float64, string or []byte; integers travel as JS numbers
// (exact below 2^53). Query returns integers as int64, other numbers as float64, TEXT as string, BLOB
// as []byte and NULL as nil.
//
// The shim looks the binding up itself in the env of ctx's event, which Go passes, and the binding's
// name and each statement's SQL cross as numbers once the shim holds their text (see sqlTexts).
type D1 struct {
	binding string
}

var _ store.Batcher = (*D1)(nil)

// OpenD1 returns a client for the D1 binding named binding (e.g. "DB"). It does not check that the
// binding exists: each statement does, and fails if it does not.
func OpenD1(binding string) *D1 {
	return &D1{binding: binding}
}

// Exec runs one statement and returns the number of rows it changed (meta.changes). Errors are
// prefixed "d1: exec:".
func (d *D1) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	s, err := d.run(ctx, query, args, false)
	if err != nil {
		return 0, fmt.Errorf("d1: exec: %w", err)
	}
	return int64(s.v.Float()), nil
}

// Query runs one statement (a SELECT, or a write with RETURNING) and returns all its rows. Errors are
// prefixed "d1: query:".
func (d *D1) Query(ctx context.Context, query string, args ...any) ([][]any, error) {
	s, err := d.run(ctx, query, args, true)
	if err != nil {
		return nil, fmt.Errorf("d1: query: %w", err)
	}
	rows, err := decodeRows(string(s.bytes()))
	if err != nil {
		return nil, fmt.Errorf("d1: query: %w", err)
	}
	return rows, nil
}

// Batch runs stmts with D1's batch(): in order, as one transaction (if one fails, none is applied),
// in one call. It returns each statement's rows. D1 hands batch rows back as objects keyed by column
// name, so each statement's result columns must have distinct names that are not integers (the shim
// reads the values back in column order).
func (d *D1) Batch(ctx context.Context, stmts []store.Stmt) ([][][]any, error) {
	holder, name := d.lookup(ctx)
	queries := make([]string, len(stmts))
	args := make([][]any, len(stmts))
	for i, st := range stmts {
		queries[i], args[i] = st.Query, st.Args
	}
	batch, blobs, err := appendBatch(make([]byte, 0, 1024), queries, args, &d1Texts)
	if err != nil {
		return nil, fmt.Errorf("d1: batch: %w", err)
	}
	s, err := call("d1batch", holder, name, outBytes(batch), blobs)
	if err != nil {
		return nil, fmt.Errorf("d1: batch: %w", err)
	}
	out, err := decodeBatch(string(s.bytes()))
	if err != nil {
		return nil, fmt.Errorf("d1: batch: %w", err)
	}
	if len(out) != len(stmts) {
		return nil, fmt.Errorf("d1: batch: %d results for %d statements", len(out), len(stmts))
	}
	return out, nil
}

// run finds the binding in ctx's env and runs the statement in the shim: rows as JSON (raw: their
// bytes) or the number of changes (a JS number).
func (d *D1) run(ctx context.Context, query string, args []any, raw bool) (settled, error) {
	holder, name := d.lookup(ctx)
	bound, blobs, err := appendArgs(make([]byte, 0, 256), args)
	if err != nil {
		return settled{}, err
	}
	if id, ok := d1Texts.id(query); ok {
		return call("d1", holder, name, id, outBytes(bound), blobs, raw)
	}
	return call("d1", holder, name, query, outBytes(bound), blobs, raw)
}

// d1Texts are the SQL texts this runtime handed the shim (see sqlTexts): the shim's sql(id, text) keeps
// them for as long as the runtime lives, and its d1 and d1batch take the id in place of the text.
var d1Texts = sqlTexts{register: func(id int, text string) bool {
	if shimJS.Type() != js.TypeObject {
		return false
	}
	shimJS.Call("sql", id, text)
	return true
}}

// lookup returns where the shim finds the binding: the object whose env holds it (ctx's event, or the
// runtime context, whose env is the current event's) and the binding's name, or its number in d1Texts.
// The shim fails the call if there is no env or no such binding in it.
func (d *D1) lookup(ctx context.Context) (holder js.Value, name any) {
	if e, ok := eventFrom(ctx); ok {
		holder = e.v
	} else {
		holder = js.Global().Get("context")
	}
	if id, ok := d1Texts.id(d.binding); ok {
		return holder, id
	}
	return holder, d.binding
}
