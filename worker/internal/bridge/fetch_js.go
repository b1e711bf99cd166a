//go:build js && wasm

package bridge

import (
	"context"
	"fmt"
	"io"
	"net/http"
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
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("fetch: read request body: %w", err)
		}
		body = b
	}
	b := appendRequest(make([]byte, 0, 512+len(body)), req.Method, req.URL.String(), formatHeaderLines(req.Header), body)
	s, err := callCtx(ctx, "fetch", outBytes(b), timeoutMs)
	if err == nil && !s.inInbox && s.v.IsNull() {
		// The shim's timer aborted the fetch at ctx's deadline; Go's own timer for it may not have fired
		// yet. Wait for it, so that the caller sees ctx done when Fetch returns.
		<-ctx.Done()
		err = context.Cause(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch: %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	res, err := unpackResponse(s.bytes())
	if err != nil {
		return nil, fmt.Errorf("fetch: %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	res.Request = req
	return res, nil
}
