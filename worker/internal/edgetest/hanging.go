//go:build !js

package edgetest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// HangingUpstream is a loopback HTTP server that accepts every request, reads its body and never
// answers: it holds the connection until the client closes it, and records when that happened. Tests use
// it to check that the worker cuts an upstream off.
type HangingUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	calls   int
	closed  chan time.Time // one entry per request, when the client closed its connection
	release chan struct{}  // closed at cleanup, so that Close never waits for a handler
}

// NewHangingUpstream starts a HangingUpstream and registers its shutdown with t.Cleanup.
func NewHangingUpstream(t testing.TB) *HangingUpstream {
	t.Helper()
	u := &HangingUpstream{closed: make(chan time.Time, 64), release: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.calls++
		u.mu.Unlock()
		_, _ = io.ReadAll(r.Body) // net/http notices a closed connection only once the body is read
		select {
		case <-r.Context().Done():
			u.closed <- time.Now()
		case <-u.release:
		}
	}))
	t.Cleanup(u.Close) // runs after release is closed: cleanups run last-in first-out
	t.Cleanup(func() { close(u.release) })
	return u
}

// Calls returns how many requests the upstream received.
func (u *HangingUpstream) Calls() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls
}

// WaitClosed returns when the client closed the connection of a request (the next one not yet
// returned). It fails t if that has not happened within limit.
func (u *HangingUpstream) WaitClosed(t testing.TB, limit time.Duration) time.Time {
	t.Helper()
	select {
	case at := <-u.closed:
		return at
	case <-time.After(limit):
		t.Fatalf("edgetest: the upstream connection was still open after %s", limit)
		return time.Time{}
	}
}
