//go:build js && wasm

package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"syscall/js"
	"time"
)

// Fetch sends req with the Workers fetch API (following redirects, as fetch does) and returns the
// whole response, its body already read. It honours req's context: the fetch is aborted (its connection
// closed) at the context's deadline, and as soon as the context is cancelled; Fetch then returns an
// error wrapping the context's cause (context.DeadlineExceeded at the deadline). Other errors are
// network failures. Errors are prefixed "fetch:"; any HTTP status is a response.
//
// It uses neither net/http's client (about 5 MB of wasm) nor js.FuncOf per call.
func Fetch(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := context.Cause(ctx); err != nil {
		return nil, fmt.Errorf("fetch: %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	// The shim aborts at the deadline with a timer of its own (Go's wake-up timer may belong to another
	// request's context); rounded up, so that it never fires before ctx's deadline.
	timeoutMs := -1
	if d, ok := ctx.Deadline(); ok {
		timeoutMs = int(max(0, (time.Until(d)+time.Millisecond-1)/time.Millisecond))
	}
	body := js.Null()
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("fetch: read request body: %w", err)
		}
		if len(b) > 0 {
			body = uint8JS.New(len(b))
			js.CopyBytesToJS(body, b)
		}
	}
	v, err := callCtx(ctx, "fetch", req.Method, req.URL.String(), formatHeaderLines(req.Header), body, timeoutMs)
	if err == nil && v.Get("deadline").Truthy() {
		// The shim's timer aborted the fetch at ctx's deadline; Go's own timer for it may not have fired
		// yet. Wait for it, so that the caller sees ctx done when Fetch returns.
		<-ctx.Done()
		err = context.Cause(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch: %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	status := v.Get("status").Int()
	res := &http.Response{
		Status:     strconv.Itoa(status) + " " + v.Get("statusText").String(),
		StatusCode: status,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{},
		Request:    req,
	}
	parseHeaderLines(v.Get("headers").String(), res.Header)
	b := make([]byte, v.Get("body").Get("byteLength").Int())
	js.CopyBytesToGo(b, v.Get("body"))
	res.Body = io.NopCloser(bytes.NewReader(b))
	res.ContentLength = int64(len(b))
	return res, nil
}
