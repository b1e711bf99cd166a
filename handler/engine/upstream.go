package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// UpstreamRequest is one call to a tool's upstream.
type UpstreamRequest struct {
	Method string
	URL    string
	// Header holds Content-Type, the derived Idempotency-Key, the tool's
	// static headers and the forwarded caller headers.
	Header http.Header
	Body   []byte // the canonical JSON input
	// MaxResponseBytes bounds the body the implementation reads: it reads
	// at most MaxResponseBytes+1 bytes, so the engine can tell "too large".
	MaxResponseBytes int64
	// UsageHeader names the response header a metered tool reports the
	// units it used in; "" for other tools.
	UsageHeader string
}

// UpstreamResponse is what the upstream answered.
type UpstreamResponse struct {
	StatusCode  int
	ContentType string
	Body        []byte
	// Usage is the value of the request's UsageHeader, "" if absent.
	Usage string
}

// Upstream performs upstream calls. The native implementation is
// HTTPUpstream; the worker plugs in one over the Workers fetch API.
type Upstream interface {
	// Do sends req and reads the whole response. It returns an error for a
	// network failure or when ctx ends (the tool's timeout); any HTTP status
	// is a response, not an error.
	Do(ctx context.Context, req UpstreamRequest) (UpstreamResponse, error)
}

// HTTPUpstream is an Upstream over net/http.
type HTTPUpstream struct {
	// Client sends the requests; nil means http.DefaultClient.
	Client *http.Client
}

var _ Upstream = (*HTTPUpstream)(nil)

// Do implements Upstream.
func (u *HTTPUpstream) Do(ctx context.Context, req UpstreamRequest) (UpstreamResponse, error) {
	client := u.Client
	if client == nil {
		client = http.DefaultClient
	}
	return SendFunc(client.Do).Do(ctx, req)
}

// SendFunc is an Upstream over any function that sends an *http.Request:
// an *http.Client's Do natively, the Workers fetch API in the worker (which
// keeps net/http's client out of the wasm). Do returns when ctx ends even if
// the function does not honour ctx, so a tool's timeout always holds.
type SendFunc func(*http.Request) (*http.Response, error)

var _ Upstream = SendFunc(nil)

// Do implements Upstream.
func (f SendFunc) Do(ctx context.Context, req UpstreamRequest) (UpstreamResponse, error) {
	hreq, err := http.NewRequestWithContext(ctx, req.Method, req.URL, bytes.NewReader(req.Body))
	if err != nil {
		return UpstreamResponse{}, fmt.Errorf("build upstream request: %w", err)
	}
	hreq.Header = req.Header.Clone()
	type result struct {
		res UpstreamResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := f(hreq)
		if err != nil {
			done <- result{err: fmt.Errorf("send upstream request: %w", err)}
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(io.LimitReader(res.Body, req.MaxResponseBytes+1))
		if err != nil {
			done <- result{err: fmt.Errorf("read upstream response: %w", err)}
			return
		}
		up := UpstreamResponse{StatusCode: res.StatusCode, ContentType: res.Header.Get("Content-Type"), Body: body}
		if req.UsageHeader != "" {
			// Repeated, the header's values are joined as the Workers
			// runtime joins them (and so are unusable: the maximum).
			up.Usage = strings.Join(res.Header.Values(req.UsageHeader), ", ")
		}
		done <- result{res: up}
	}()
	select {
	case r := <-done:
		return r.res, r.err
	case <-ctx.Done():
		return UpstreamResponse{}, fmt.Errorf("send upstream request: %w", ctx.Err())
	}
}

// UpstreamFunc adapts a function to Upstream.
type UpstreamFunc func(ctx context.Context, req UpstreamRequest) (UpstreamResponse, error)

var _ Upstream = UpstreamFunc(nil)

// Do implements Upstream by calling f.
func (f UpstreamFunc) Do(ctx context.Context, req UpstreamRequest) (UpstreamResponse, error) {
	return f(ctx, req)
}
