// Package hrana is a small libSQL (Turso) client: a store.DbClient and
// store.Batcher speaking Hrana v2 over HTTP (POST {url}/v2/pipeline, JSON),
// written from the spec (docs/HRANA_3_SPEC.md in tursodatabase/libsql; v2 is
// its subset without cursors, describe and protobuf).
//
// Every call is one HTTP request and one stream that the same request
// closes: Exec and Query send [execute, close], Batch sends [batch, close]
// where the batch is a transaction (BEGIN IMMEDIATE, each statement only if
// the one before it succeeded, COMMIT, and ROLLBACK unless the COMMIT
// succeeded). No baton is ever kept, so nothing outlives a call.
//
// The HTTP transport is a function (Options.SendFunc): natively
// http.DefaultClient.Do; in the worker the bridge's fetch, which keeps Go's
// js/wasm net/http client (and its AbortController handling) out of the
// build. Nothing here depends on database/sql.
package hrana

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/toolgate/toolgate-go/store"
)

// DefaultMaxResponseBytes bounds a pipeline response when
// Options.MaxResponseBytes is zero: a stored response is at most
// store.DefaultMaxResponseBytes, and a listing query returns a few of them.
const DefaultMaxResponseBytes = 32 << 20

// ErrUnavailable means the server could not be reached or answered with a
// 5xx status: the statement may or may not have run. Errors from a call wrap
// it so that errors.Is(err, ErrUnavailable) tells a transport failure from an
// SQL error.
var ErrUnavailable = errors.New("hrana: database unavailable")

// Error is an error the server reported: for a statement (an SQL error,
// with Code such as "SQLITE_CONSTRAINT" when the server gives one), or for
// the whole pipeline (with Status, the HTTP status, when not 200).
type Error struct {
	Message string `json:"message"`
	Code    string `json:"code"`
	Status  int    `json:"-"` // the HTTP status of a failed pipeline; 0 for a statement error
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	if e.Code != "" {
		b.WriteString(" (" + e.Code + ")")
	}
	if e.Status != 0 {
		b.WriteString(" (HTTP " + strconv.Itoa(e.Status) + ")")
	}
	return b.String()
}

// Options configures Open.
type Options struct {
	// AuthToken is sent as "Authorization: Bearer <AuthToken>". Empty means
	// the token in the URL's authToken parameter, if any, else no header.
	AuthToken string
	// SendFunc sends one HTTP request and returns its response. Nil means
	// http.DefaultClient.Do natively; in js/wasm it is required (pass the
	// worker's fetch), so that net/http's client is never linked there.
	SendFunc func(*http.Request) (*http.Response, error)
	// MaxResponseBytes bounds the size of a response body. Zero means
	// DefaultMaxResponseBytes.
	MaxResponseBytes int64
}

// Client runs statements on one libSQL database over Hrana v2 HTTP. It is
// safe for concurrent use: it holds no stream between calls.
type Client struct {
	endpoint string // .../v2/pipeline
	auth     string // the Authorization header value, or ""
	send     func(*http.Request) (*http.Response, error)
	max      int64
}

var _ store.Batcher = (*Client)(nil)

// Open returns a Client for rawURL: libsql://host (HTTPS; with ?tls=0,
// HTTP), https://host or http://host, optionally with a path prefix and an
// authToken query parameter. It contacts nothing. It returns an error for
// another scheme, a URL without a host, or a missing SendFunc in js/wasm.
func Open(rawURL string, opts Options) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("hrana: open: %w", err)
	}
	q := u.Query()
	switch u.Scheme {
	case "libsql":
		u.Scheme = "https"
		if q.Get("tls") == "0" {
			u.Scheme = "http"
		}
	case "https", "http":
	default:
		return nil, fmt.Errorf("hrana: open: unsupported URL scheme %q (want libsql, https or http)", u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("hrana: open: URL %q has no host", u.Redacted())
	}
	c := &Client{send: opts.SendFunc, max: opts.MaxResponseBytes}
	if c.send == nil {
		c.send = defaultSend
	}
	if c.send == nil {
		return nil, errors.New("hrana: open: Options.SendFunc is required in this build")
	}
	if c.max <= 0 {
		c.max = DefaultMaxResponseBytes
	}
	token := opts.AuthToken
	if token == "" {
		token = q.Get("authToken")
	}
	if token != "" {
		c.auth = "Bearer " + token
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	c.endpoint = strings.TrimSuffix(u.String(), "/") + "/v2/pipeline"
	return c, nil
}

// Endpoint returns the pipeline URL the client posts to.
func (c *Client) Endpoint() string { return c.endpoint }

// Exec runs one statement and returns the number of rows it changed, in one
// HTTP request. Errors are prefixed "hrana: exec:"; see ErrUnavailable and
// *Error.
func (c *Client) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := c.one(ctx, query, args, false)
	if err != nil {
		return 0, fmt.Errorf("hrana: exec: %w", err)
	}
	return res.AffectedRowCount, nil
}

// Query runs one statement (a SELECT, or a write with RETURNING) and
// returns all its rows, in one HTTP request. Values are int64, float64,
// string, []byte or nil. Errors are prefixed "hrana: query:"; see
// ErrUnavailable and *Error.
func (c *Client) Query(ctx context.Context, query string, args ...any) ([][]any, error) {
	res, err := c.one(ctx, query, args, true)
	if err != nil {
		return nil, fmt.Errorf("hrana: query: %w", err)
	}
	rows, err := res.values()
	if err != nil {
		return nil, fmt.Errorf("hrana: query: %w", err)
	}
	return rows, nil
}

// Batch runs stmts as one transaction in one HTTP request and returns each
// statement's rows. If a statement fails, nothing is applied and its error
// is returned, prefixed "hrana: batch statement N:" (1-based). A transport
// failure wraps ErrUnavailable; then, as with any lost reply, the outcome
// is unknown.
func (c *Client) Batch(ctx context.Context, stmts []store.Stmt) ([][][]any, error) {
	if len(stmts) == 0 {
		return [][][]any{}, nil
	}
	body, err := appendBatchPipeline(make([]byte, 0, 512), stmts)
	if err != nil {
		return nil, fmt.Errorf("hrana: batch: %w", err)
	}
	res, err := c.pipeline(ctx, body, "batch")
	if err != nil {
		return nil, fmt.Errorf("hrana: batch: %w", err)
	}
	n := len(stmts)
	begin, commit := 0, n+1
	if len(res.StepResults) != n+3 || len(res.StepErrors) != n+3 {
		return nil, fmt.Errorf("hrana: batch: got %d step results for %d steps", len(res.StepResults), n+3)
	}
	if e := res.StepErrors[begin]; e != nil {
		return nil, fmt.Errorf("hrana: batch: begin: %w", e)
	}
	for i := 1; i <= n; i++ {
		if e := res.StepErrors[i]; e != nil {
			return nil, fmt.Errorf("hrana: batch statement %d: %w", i, e)
		}
	}
	if e := res.StepErrors[commit]; e != nil {
		return nil, fmt.Errorf("hrana: batch: commit: %w", e)
	}
	if res.StepResults[commit] == nil {
		return nil, errors.New("hrana: batch: the transaction was not committed")
	}
	out := make([][][]any, n)
	for i := range n {
		if res.StepResults[i+1] == nil { // committed, but the server sent no result: not the spec
			return nil, fmt.Errorf("hrana: batch statement %d: committed without a result", i+1)
		}
		if out[i], err = res.StepResults[i+1].values(); err != nil {
			return nil, fmt.Errorf("hrana: batch statement %d: %w", i+1, err)
		}
	}
	return out, nil
}

// one runs a single statement and returns its result.
func (c *Client) one(ctx context.Context, query string, args []any, wantRows bool) (*stmtResult, error) {
	body, err := appendExecutePipeline(make([]byte, 0, 256+len(query)), query, args, wantRows)
	if err != nil {
		return nil, err
	}
	return c.pipeline(ctx, body, "execute")
}

// pipeline posts body (a pipeline of [want, close]) and returns the result
// of its first request, which must be of type want.
func (c *Client) pipeline(ctx context.Context, body []byte, want string) (*stmtResult, error) {
	raw, err := c.post(ctx, body)
	if err != nil {
		return nil, err
	}
	resp, err := decodePipeline(raw)
	if err != nil {
		return nil, err
	}
	if len(resp.Results) != 2 {
		return nil, fmt.Errorf("decode pipeline response: got %d results, want 2", len(resp.Results))
	}
	r := resp.Results[0]
	switch {
	case r.Type == "error" && r.Error != nil:
		return nil, r.Error
	case r.Type != "ok" || r.Response == nil:
		return nil, fmt.Errorf("decode pipeline response: result of type %q", r.Type)
	case r.Response.Type != want:
		return nil, fmt.Errorf("decode pipeline response: %q response to a %q request", r.Response.Type, want)
	case r.Response.Result == nil:
		return nil, fmt.Errorf("decode pipeline response: %s response without a result", want)
	}
	return r.Response.Result, nil
}

// post sends one pipeline request and returns the body of a 200 response.
// It returns when ctx ends even if SendFunc does not honour ctx (the
// worker's fetch), leaving the request to finish on its own.
func (c *Client) post(ctx context.Context, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		b, err := c.roundTrip(req)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.body, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("pipeline: %w", ctx.Err())
	}
}

func (c *Client) roundTrip(req *http.Request) ([]byte, error) {
	res, err := c.send(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, fmt.Errorf("pipeline: %w", ctxErr)
		}
		return nil, fmt.Errorf("pipeline: %w: %w", ErrUnavailable, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, c.max+1))
	if err != nil {
		return nil, fmt.Errorf("pipeline: read response: %w: %w", ErrUnavailable, err)
	}
	if int64(len(b)) > c.max {
		return nil, fmt.Errorf("pipeline: response larger than %d bytes", c.max)
	}
	if res.StatusCode == http.StatusOK {
		return b, nil
	}
	e := decodeHTTPError(res.StatusCode, b)
	if res.StatusCode >= 500 {
		return nil, fmt.Errorf("pipeline: %w: %w", ErrUnavailable, e)
	}
	return nil, fmt.Errorf("pipeline: %w", e)
}
