//go:build js && wasm

package bridge

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"syscall/js"
)

// Fetch sends req with the Workers fetch API (following redirects, as fetch does) and returns the
// whole response, its body already read. It ignores req's context: wrap it (handler.SendFunc does) to
// stop waiting when the context ends. Errors are network failures, prefixed "fetch:"; any HTTP status
// is a response.
//
// It uses neither net/http's client (about 5 MB of wasm) nor js.FuncOf per call.
func Fetch(req *http.Request) (*http.Response, error) {
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
	v, err := call("fetch", req.Method, req.URL.String(), formatHeaderLines(req.Header), body)
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
