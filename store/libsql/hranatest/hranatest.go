//go:build !js

// Package hranatest is a small Hrana v2 over HTTP server backed by a SQLite
// file, so the real libSQL clients (tursodatabase/libsql-client-go and
// store/hrana) can be tested over real HTTP without a libSQL server. It
// implements what they send (POST /v2/pipeline with execute, batch with
// conditions, and close requests) plus the rest of
// the v2 stream requests that are cheap to do on SQLite: sequence, store_sql,
// close_sql, and the is_autocommit condition and get_autocommit request.
//
// Every stream owns one SQLite connection, opened for it and closed with it,
// so a transaction can span pipeline requests and no connection state leaks
// between streams. It is a test server: there is no authentication, and it
// listens on loopback addresses only.
package hranatest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// DefaultStreamIdleTimeout is how long a stream may stay unused before the
// server closes it, the same as a libSQL server.
const DefaultStreamIdleTimeout = 10 * time.Second

// maxBodyBytes bounds the size of a pipeline request body.
const maxBodyBytes = 64 << 20

// Server serves Hrana v2 over HTTP from one SQLite file. It is an
// http.Handler and is safe for concurrent use.
type Server struct {
	db          *sql.DB
	anchor      *sql.Conn // keeps the WAL open between streams
	idleTimeout time.Duration
	now         func() time.Time
	addr        string
	path        string
	requests    atomic.Int64

	mu      sync.Mutex
	streams map[string]*stream // idle streams by their current baton
	closed  bool
	gate    chan struct{} // non-nil while paused: closed by the release
	held    int           // requests waiting at the gate
	heldAll int           // requests that waited at a gate, ever
	heldCh  chan struct{} // closed and replaced whenever held changes

	http      *http.Server // set by Start
	url       string
	stop      chan struct{}
	swept     chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ http.Handler = (*Server)(nil)

// Option configures a Server.
type Option func(*Server)

// WithStreamIdleTimeout sets how long a stream may stay unused before it is
// closed and its transaction, if any, rolled back. Zero or less means
// DefaultStreamIdleTimeout.
func WithStreamIdleTimeout(d time.Duration) Option {
	return func(s *Server) {
		if d > 0 {
			s.idleTimeout = d
		}
	}
}

// WithNowFunc sets the clock that stream idle expiry reads. Nil means
// time.Now. Tests pass a fake clock to expire streams without sleeping.
func WithNowFunc(now func() time.Time) Option {
	return func(s *Server) {
		if now != nil {
			s.now = now
		}
	}
}

// WithAddr sets the address Start listens on. Empty means "127.0.0.1:0"; Start
// returns an error if the address is not a loopback address. New ignores it.
func WithAddr(addr string) Option {
	return func(s *Server) {
		if addr != "" {
			s.addr = addr
		}
	}
}

// New opens (creating if needed) the SQLite file at dbPath in WAL mode and
// returns a Server for it that is not listening yet: use it as an
// http.Handler, or call Start instead. It returns an error if the database
// cannot be opened.
func New(dbPath string, opts ...Option) (*Server, error) {
	s := &Server{
		idleTimeout: DefaultStreamIdleTimeout,
		now:         time.Now,
		addr:        "127.0.0.1:0",
		streams:     make(map[string]*stream),
		heldCh:      make(chan struct{}),
		stop:        make(chan struct{}),
		swept:       make(chan struct{}),
	}
	for _, opt := range opts {
		opt(s)
	}
	if dbPath == "" || strings.Contains(dbPath, "?") {
		return nil, fmt.Errorf("hranatest: open database: invalid path %q", dbPath)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)") // writers wait for each other instead of failing
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	db, err := sql.Open("sqlite", dbPath+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("hranatest: open database: %w", err)
	}
	// A stream's connection is closed with the stream, never reused.
	db.SetMaxIdleConns(0)
	if s.anchor, err = db.Conn(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("hranatest: open database: %w", err)
	}
	s.db, s.path = db, dbPath
	go s.sweepLoop()
	return s, nil
}

// Start is New followed by listening on 127.0.0.1 on a free port (or the
// address given by WithAddr) and serving in the background. The base URL for
// clients is s.URL(). It returns an error if the database cannot be opened or
// the address is not a free loopback address.
func Start(dbPath string, opts ...Option) (*Server, error) {
	s, err := New(dbPath, opts...)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("hranatest: listen: %w", err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		ln.Close()
		s.Close()
		return nil, fmt.Errorf("hranatest: listen: %s is not a loopback address", ln.Addr())
	}
	s.url = "http://" + ln.Addr().String()
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go s.http.Serve(ln) //nolint:errcheck // returns http.ErrServerClosed after Close
	return s, nil
}

// URL returns the base URL of a server started with Start, such as
// "http://127.0.0.1:41234", or "" for a server made with New.
func (s *Server) URL() string { return s.url }

// Path returns the SQLite file the server serves. A test can restart a
// database by closing the server and starting a new one on Path and the old
// address (WithAddr).
func (s *Server) Path() string { return s.path }

// Requests returns how many pipeline requests (HTTP round trips to
// /v2/pipeline) the server has received, including rejected ones.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Close stops listening (if started), closes every stream, rolling back its
// transaction, and closes the database. Requests still in flight finish on
// their connections, which are then closed. It returns the first error met.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.swept
		var errs []error
		if s.http != nil {
			errs = append(errs, s.http.Close())
		}
		s.mu.Lock()
		s.closed = true
		streams := s.streams
		s.streams = nil
		s.mu.Unlock()
		for _, st := range streams {
			errs = append(errs, st.conn.Close())
		}
		errs = append(errs, s.anchor.Close(), s.db.Close())
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("hranatest: close server: %w", err)
		}
	})
	return s.closeErr
}

// ServeHTTP serves POST /v2/pipeline, and GET /v2 so clients that probe for
// the protocol version find v2. Every other path is 404, so a client probing
// for v3 falls back to v2.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v2":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, http.StatusMethodNotAllowed, &hranaError{Message: "hranatest: use GET"})
			return
		}
		w.WriteHeader(http.StatusOK)
	case "/v2/pipeline":
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, &hranaError{Message: "hranatest: use POST"})
			return
		}
		s.pipeline(w, r)
	default:
		writeError(w, http.StatusNotFound, &hranaError{Message: "hranatest: not found: " + r.URL.Path})
	}
}

func (s *Server) pipeline(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.sweep()

	var req pipelineRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, &hranaError{Message: "hranatest: decode pipeline request: " + err.Error()})
		return
	}
	ctx := r.Context()
	if !s.wait(ctx) {
		writeError(w, http.StatusServiceUnavailable, &hranaError{Message: "hranatest: server closed while the request was paused"})
		return
	}
	st, err := s.acquire(ctx, req.Baton)
	if err != nil {
		status := http.StatusInternalServerError
		if _, ok := errors.AsType[*hranaError](err); ok {
			status = http.StatusBadRequest
		}
		writeError(w, status, toHranaError(err))
		return
	}

	resp := pipelineResponse{Results: make([]streamResult, len(req.Requests))}
	for i, sr := range req.Requests {
		switch {
		case st == nil:
			resp.Results[i] = streamResult{Type: "error", Error: &hranaError{Message: "hranatest: stream is closed", Code: "STREAM_CLOSED"}}
		case sr.Type == "close":
			st.conn.Close() //nolint:errcheck // closing also rolls back; nothing to report
			st = nil
			resp.Results[i] = streamResult{Type: "ok", Response: &streamResponse{Type: "close"}}
		default:
			resp.Results[i] = st.handle(ctx, sr)
		}
	}
	if st != nil {
		resp.Baton = s.release(st)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp) //nolint:errcheck // the client went away
}

// Pause stalls the database: every pipeline request that arrives from now
// on waits, after its body is read and before it touches the database,
// until release is called, the server closes (then it gets a 503) or its
// client goes away. Tests use it to hold statements in flight
// deterministically. release may be called more than once; Pause while
// paused returns a release that ends the same pause.
func (s *Server) Pause() (release func()) {
	s.mu.Lock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
	gate := s.gate
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.gate == gate {
			close(gate)
			s.gate = nil
		}
	}
}

// WaitPaused blocks until at least n requests are waiting on a Pause, or
// ctx ends; it returns ctx.Err() then, and nil otherwise.
func (s *Server) WaitPaused(ctx context.Context, n int) error {
	return s.waitCount(ctx, n, func() int { return s.held })
}

// HeldTotal returns how many requests have waited on a Pause since the
// server started.
func (s *Server) HeldTotal() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heldAll
}

// WaitHeldTotal blocks until at least n requests have waited on a Pause
// since the server started (whether they still wait, ended or were let
// through), or ctx ends; it returns ctx.Err() then, and nil otherwise.
func (s *Server) WaitHeldTotal(ctx context.Context, n int) error {
	return s.waitCount(ctx, n, func() int { return s.heldAll })
}

// waitCount blocks until count(), read under s.mu, reaches n, or ctx ends.
func (s *Server) waitCount(ctx context.Context, n int, count func() int) error {
	for {
		s.mu.Lock()
		got, changed := count(), s.heldCh
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// wait holds a request while the server is paused. It returns false if the
// server closed or the request ended meanwhile.
func (s *Server) wait(ctx context.Context) bool {
	s.mu.Lock()
	gate := s.gate
	if gate == nil {
		s.mu.Unlock()
		return true
	}
	s.setHeld(+1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.setHeld(-1)
		s.mu.Unlock()
	}()
	select {
	case <-gate:
		return true
	case <-s.stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// setHeld changes the number of held requests and wakes WaitPaused; s.mu is held.
func (s *Server) setHeld(d int) {
	s.held += d
	if d > 0 {
		s.heldAll += d
	}
	close(s.heldCh)
	s.heldCh = make(chan struct{})
}

// acquire takes the stream that baton names out of the idle set, so that no
// other request can use it, or opens a new stream if baton is nil. It returns
// a *hranaError if the baton is unknown, already used, or expired.
func (s *Server) acquire(ctx context.Context, baton *string) (*stream, error) {
	if baton == nil {
		conn, err := s.db.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("hranatest: open stream: %w", err)
		}
		return &stream{conn: conn, sqls: make(map[int32]string)}, nil
	}
	s.mu.Lock()
	st, ok := s.streams[*baton]
	delete(s.streams, *baton)
	s.mu.Unlock()
	if ok && s.expired(st, s.now()) {
		st.conn.Close() //nolint:errcheck // closing also rolls back; nothing to report
		ok = false
	}
	if !ok {
		return nil, &hranaError{Message: "hranatest: the baton is invalid: the stream expired or closed, or the baton was already used", Code: "STREAM_EXPIRED"}
	}
	return st, nil
}

// release puts st back into the idle set under a fresh baton and returns
// that baton, or nil if the server has closed meanwhile.
func (s *Server) release(st *stream) *string {
	baton := rand.Text()
	st.lastUsed = s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		st.conn.Close() //nolint:errcheck // closing also rolls back; nothing to report
		return nil
	}
	s.streams[baton] = st
	return &baton
}

func (s *Server) expired(st *stream, now time.Time) bool {
	return now.Sub(st.lastUsed) > s.idleTimeout
}

// sweep closes the idle streams that have expired. Closing a connection rolls
// back its open transaction and releases its locks.
func (s *Server) sweep() {
	now := s.now()
	var expired []*stream
	s.mu.Lock()
	for baton, st := range s.streams {
		if s.expired(st, now) {
			delete(s.streams, baton)
			expired = append(expired, st)
		}
	}
	s.mu.Unlock()
	for _, st := range expired {
		st.conn.Close() //nolint:errcheck // closing also rolls back; nothing to report
	}
}

// sweepLoop sweeps regularly, so that an abandoned transaction stops blocking
// writers even when no requests arrive.
func (s *Server) sweepLoop() {
	defer close(s.swept)
	t := time.NewTicker(min(max(s.idleTimeout/4, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.sweep()
		}
	}
}

// writeError writes a stream-level error. The body is the spec's Error
// structure plus an "error" string, which libsql-client-go reads.
func writeError(w http.ResponseWriter, status int, e *hranaError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct { //nolint:errcheck // the client went away
		Error string `json:"error"`
		*hranaError
	}{e.Message, e})
}
