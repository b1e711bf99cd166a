// Package facilitatortest is an x402 v2 facilitator for tests, written from
// the specification (x402-specification-v2.md §7, the exact scheme on EVM):
// POST /verify, POST /settle and GET /supported over real HTTP, so the
// gateway's facilitator client is tested the way it runs.
//
// It checks what a facilitator checks, except what needs a chain: the
// request's structure and version; the scheme ("exact") and network (one of
// its networks); that the payment's accepted requirements are the
// requirements given (asset, payTo, amount); that the authorization pays
// payTo at least the amount; its window, validAfter < now < validBefore, on
// the server's clock; its signature, in a test scheme that stands in for
// EIP-712 (see PayerKey); and its nonce, which a settle consumes forever
// (per network, asset and payer, as the token contract does), so a second
// settle of one payment fails like the chain would, with
// invalid_exact_evm_nonce_already_used, and concurrent settles of one
// payment give exactly one success. Balances, signature recovery and
// transaction simulation are out of scope.
//
// It counts verify and settle calls per nonce (Calls), and can be told to
// misbehave (Inject): refuse, answer an HTTP status, hang until the client
// gives up, or do the work and cut the connection before answering. It is
// a test server: no authentication is required (an Authorization header is
// recorded, LastAuthorization), and it listens on loopback only.
package facilitatortest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate-go/handler/pay/x402"
	"github.com/toolgate/toolgate-go/handler/safejson"
)

// DefaultNetworks are the networks a server supports when Start is given
// no WithNetworks: Base Sepolia and Base.
var DefaultNetworks = []string{"eip155:84532", "eip155:8453"}

// The wire documents, written from the specification again rather than
// borrowed from package x402, so that a wrong field name there fails the
// tests instead of agreeing with itself.
type (
	requirements struct {
		Scheme            string          `json:"scheme"`
		Network           string          `json:"network"`
		Amount            string          `json:"amount"`
		Asset             string          `json:"asset"`
		PayTo             string          `json:"payTo"`
		MaxTimeoutSeconds *int            `json:"maxTimeoutSeconds"`
		Extra             json.RawMessage `json:"extra"`
	}
	authorization struct {
		From        string `json:"from"`
		To          string `json:"to"`
		Value       string `json:"value"`
		ValidAfter  string `json:"validAfter"`
		ValidBefore string `json:"validBefore"`
		Nonce       string `json:"nonce"`
	}
	payment struct {
		X402Version int          `json:"x402Version"`
		Accepted    requirements `json:"accepted"`
		Payload     struct {
			Signature     string        `json:"signature"`
			Authorization authorization `json:"authorization"`
		} `json:"payload"`
	}
	verifyAnswer struct {
		IsValid       bool   `json:"isValid"`
		InvalidReason string `json:"invalidReason,omitempty"`
		Payer         string `json:"payer,omitempty"`
	}
	settleAnswer struct {
		Success     bool   `json:"success"`
		ErrorReason string `json:"errorReason,omitempty"`
		Payer       string `json:"payer,omitempty"`
		Transaction string `json:"transaction"`
		Network     string `json:"network"`
	}
	kind struct {
		X402Version int    `json:"x402Version"`
		Scheme      string `json:"scheme"`
		Network     string `json:"network"`
	}
	supportedAnswer struct {
		Kinds      []kind              `json:"kinds"`
		Extensions []string            `json:"extensions"`
		Signers    map[string][]string `json:"signers"`
	}
	request struct {
		X402Version         *int         `json:"x402Version"`
		PaymentPayload      payment      `json:"paymentPayload"`
		PaymentRequirements requirements `json:"paymentRequirements"`
	}
)

// FaultKind is how an injected fault misbehaves.
type FaultKind int

const (
	// Reject refuses: /verify answers isValid false, /settle success false,
	// with Fault.Reason; nothing settles.
	Reject FaultKind = iota + 1
	// Status answers Fault.Status (e.g. 503) with a plain-text body;
	// nothing settles.
	Status
	// Hang holds the request, unanswered, until the client gives up (its
	// context ends) or the server closes; nothing settles.
	Hang
	// Drop does the work (a settle settles, and counts) and then cuts the
	// connection without answering: the outcome a client cannot know.
	Drop
)

// Fault is a misbehaviour for Inject.
type Fault struct {
	Kind   FaultKind
	Reason string // Reject's reason code; "" means unexpected_verify_error or unexpected_settle_error
	Status int    // Status's HTTP status; 0 means 503
}

type injected struct {
	fault Fault
	left  int // answers left; 0: until ClearFaults
}

// Calls counts what the server was asked about one nonce.
type Calls struct {
	Verify int // POST /verify calls (faulted ones included)
	Settle int // POST /settle calls (faulted ones included)
	// Settled is how many settles moved money: 0 or 1, by construction; a
	// test asserts it.
	Settled int
}

// Server is a running test facilitator.
type Server struct {
	url      string
	secret   string
	now      func() time.Time
	networks []string
	srv      *http.Server
	done     chan struct{}
	closed   sync.Once

	mu       sync.Mutex
	used     map[string]string // authorization key (network/asset/from/nonce) → transaction
	calls    map[string]*Calls // canonical nonce → counts
	faults   map[string][]*injected
	lastAuth string
}

// Option configures Start.
type Option func(*config)

type config struct {
	addr     string
	secret   string
	now      func() time.Time
	networks []string
}

// WithAddr listens on addr (a loopback host:port) instead of 127.0.0.1:0.
func WithAddr(addr string) Option { return func(c *config) { c.addr = addr } }

// WithSecret derives payer keys from secret instead of DefaultSecret.
func WithSecret(secret string) Option { return func(c *config) { c.secret = secret } }

// WithClock makes now the server's clock (validAfter/validBefore checks).
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithNetworks makes networks (CAIP-2) the supported ones instead of
// DefaultNetworks.
func WithNetworks(networks ...string) Option { return func(c *config) { c.networks = networks } }

// Start starts a server on a loopback address. It returns an error if the
// address is not loopback or cannot be listened on.
func Start(opts ...Option) (*Server, error) {
	c := config{addr: "127.0.0.1:0", secret: DefaultSecret, now: time.Now, networks: DefaultNetworks}
	for _, o := range opts {
		o(&c)
	}
	host, _, err := net.SplitHostPort(c.addr)
	if err != nil {
		return nil, fmt.Errorf("facilitatortest: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("facilitatortest: %s is not a loopback address", c.addr)
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("facilitatortest: %w", err)
	}
	s := &Server{url: "http://" + ln.Addr().String(), secret: c.secret, now: c.now,
		networks: append([]string(nil), c.networks...), done: make(chan struct{}),
		used: map[string]string{}, calls: map[string]*Calls{}, faults: map[string][]*injected{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /verify", s.verify)
	mux.HandleFunc("POST /settle", s.settle)
	mux.HandleFunc("GET /supported", s.supported)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL returns the server's base URL, http://127.0.0.1:PORT.
func (s *Server) URL() string { return s.url }

// Close stops the server, ending hung requests and open connections.
func (s *Server) Close() error {
	s.closed.Do(func() { close(s.done) })
	return s.srv.Close()
}

// Payer returns the payer named seed, with a key for this server's secret.
func (s *Server) Payer(seed string) Payer { return NewPayer(s.secret, seed) }

// Inject makes the next times answers of endpoint ("/verify", "/settle" or
// "/supported") misbehave as f, after the faults injected before it are
// used up; times 0 means every answer until ClearFaults.
func (s *Server) Inject(endpoint string, times int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[endpoint] = append(s.faults[endpoint], &injected{fault: f, left: times})
}

// ClearFaults removes every injected fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[string][]*injected{}
}

// nextFault takes the fault for the next answer of endpoint, if any.
func (s *Server) nextFault(endpoint string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.faults[endpoint]
	if len(q) == 0 {
		return Fault{}, false
	}
	f := q[0]
	if f.left > 0 {
		if f.left--; f.left == 0 {
			s.faults[endpoint] = q[1:]
		}
	}
	return f.fault, true
}

// Calls returns the counts for nonce (in any form: decimal, hex, with or
// without leading zeros).
func (s *Server) Calls(nonce string) Calls {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.calls[canonicalNonce(nonce)]; c != nil {
		return *c
	}
	return Calls{}
}

// Settlements returns how many payments were settled in all.
func (s *Server) Settlements() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.used)
}

// LastAuthorization returns the Authorization header of the last request
// ("" if it had none).
func (s *Server) LastAuthorization() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAuth
}

func canonicalNonce(n string) string {
	v, err := parseUint(n)
	if err != nil {
		return n
	}
	return fmt.Sprintf("0x%064x", v)
}

// count records a call about the request's nonce.
func (s *Server) count(nonce string, settle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := canonicalNonce(nonce)
	c := s.calls[key]
	if c == nil {
		c = &Calls{}
		s.calls[key] = c
	}
	if settle {
		c.Settle++
	} else {
		c.Verify++
	}
}

// read decodes the request body (at most 64 KiB, checked by
// safejson.Check first). An unreadable body is answered 400
// invalid_payload by the caller.
func (s *Server) read(r *http.Request) (request, error) {
	var req request
	s.mu.Lock()
	s.lastAuth = r.Header.Get("Authorization")
	s.mu.Unlock()
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	if err != nil || len(b) > 64<<10 {
		return req, errors.New("unreadable or too large body")
	}
	if reason := safejson.Check(b, 32); reason != "" {
		return req, errors.New(reason)
	}
	return req, json.Unmarshal(b, &req)
}

// check returns the reason code why req does not pay, or "" if it does,
// and the payer. The caller holds no lock; check reads s.used under it.
func (s *Server) check(req request) (reason string) {
	p, want := req.PaymentPayload, req.PaymentRequirements
	a := p.Payload.Authorization
	switch {
	case p.X402Version != 2 || (req.X402Version != nil && *req.X402Version != 2):
		return x402.ReasonInvalidVersion
	case want.Scheme != x402.SchemeExact:
		return x402.ReasonUnsupportedScheme
	case p.Accepted.Scheme != want.Scheme:
		return x402.ReasonInvalidScheme
	case !s.supports(want.Network) || p.Accepted.Network != want.Network:
		return x402.ReasonInvalidNetwork
	case !address(want.Asset) || !address(want.PayTo) || !decimal(want.Amount) || want.MaxTimeoutSeconds == nil:
		return x402.ReasonInvalidRequirements
	case !address(a.From) || !address(a.To) || p.Payload.Signature == "":
		return x402.ReasonInvalidPayload
	case !strings.EqualFold(p.Accepted.Asset, want.Asset):
		return x402.ReasonAssetMismatch
	case !strings.EqualFold(p.Accepted.PayTo, want.PayTo) || !strings.EqualFold(a.To, want.PayTo):
		return x402.ReasonRecipientMismatch
	case p.Accepted.Amount != want.Amount:
		return x402.ReasonValue
	}
	value, err1 := parseUint(a.Value)
	after, err2 := parseUint(a.ValidAfter)
	before, err3 := parseUint(a.ValidBefore)
	if err := errors.Join(err1, err2, err3); err != nil {
		return x402.ReasonInvalidPayload
	}
	sig, err := signature(PayerKey(s.secret, a.From), want.Network, want.Asset, a)
	if err != nil {
		return x402.ReasonInvalidPayload
	}
	amount, _ := parseUint(want.Amount)
	now := s.now().Unix()
	switch {
	case !strings.EqualFold(sig, p.Payload.Signature):
		return x402.ReasonSignature
	case value.Cmp(amount) < 0:
		return x402.ReasonValue
	case !after.IsInt64() || after.Int64() >= now:
		return x402.ReasonValidAfter
	case before.IsInt64() && before.Int64() <= now:
		return x402.ReasonValidBefore
	}
	s.mu.Lock()
	_, used := s.used[authKey(req)]
	s.mu.Unlock()
	if used {
		return x402.ReasonNonceAlreadyUsed
	}
	return ""
}

func (s *Server) supports(network string) bool {
	for _, n := range s.networks {
		if n == network {
			return true
		}
	}
	return false
}

// authKey is what the token contract refuses a replay by: its address (on
// its network), the payer and the nonce.
func authKey(req request) string {
	a := req.PaymentPayload.Payload.Authorization
	return strings.ToLower(req.PaymentRequirements.Network + "/" + req.PaymentRequirements.Asset + "/" + a.From + "/" +
		canonicalNonce(a.Nonce))
}

func (s *Server) verify(w http.ResponseWriter, r *http.Request) {
	req, err := s.read(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, verifyAnswer{InvalidReason: x402.ReasonInvalidPayload})
		return
	}
	payer := req.PaymentPayload.Payload.Authorization.From
	s.count(req.PaymentPayload.Payload.Authorization.Nonce, false)
	if f, ok := s.nextFault("/verify"); ok {
		if s.misbehave(w, r, f, func() {
			writeJSON(w, http.StatusOK, verifyAnswer{InvalidReason: orDefault(f.Reason, x402.ReasonUnexpectedVerify), Payer: payer})
		}, nil) {
			return
		}
	}
	if reason := s.check(req); reason != "" {
		writeJSON(w, http.StatusOK, verifyAnswer{InvalidReason: reason, Payer: payer})
		return
	}
	writeJSON(w, http.StatusOK, verifyAnswer{IsValid: true, Payer: payer})
}

func (s *Server) settle(w http.ResponseWriter, r *http.Request) {
	req, err := s.read(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, settleAnswer{ErrorReason: x402.ReasonInvalidPayload})
		return
	}
	payer := req.PaymentPayload.Payload.Authorization.From
	network := req.PaymentRequirements.Network
	s.count(req.PaymentPayload.Payload.Authorization.Nonce, true)
	if f, ok := s.nextFault("/settle"); ok {
		reject := func() {
			writeJSON(w, http.StatusOK, settleAnswer{ErrorReason: orDefault(f.Reason, x402.ReasonUnexpectedSettle),
				Payer: payer, Network: network})
		}
		if s.misbehave(w, r, f, reject, func() { s.transfer(req) }) {
			return
		}
	}
	tx, reason := s.transfer(req)
	if reason != "" {
		writeJSON(w, http.StatusOK, settleAnswer{ErrorReason: reason, Payer: payer, Network: network})
		return
	}
	writeJSON(w, http.StatusOK, settleAnswer{Success: true, Payer: payer, Transaction: tx, Network: network})
}

// transfer is the chain's transferWithAuthorization: it checks the payment
// and consumes its nonce in one step under the lock, so of concurrent
// settles of one payment exactly one succeeds.
func (s *Server) transfer(req request) (tx, reason string) {
	if reason := s.check(req); reason != "" {
		return "", reason
	}
	key := authKey(req)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, used := s.used[key]; used {
		return "", x402.ReasonNonceAlreadyUsed
	}
	sum := sha256.Sum256([]byte("facilitatortest tx/" + key))
	tx = "0x" + hex.EncodeToString(sum[:])
	s.used[key] = tx
	s.calls[canonicalNonce(req.PaymentPayload.Payload.Authorization.Nonce)].Settled++
	return tx, ""
}

// misbehave answers per f and reports whether the request is done; work
// is what Drop does before cutting the connection (nil: nothing).
func (s *Server) misbehave(w http.ResponseWriter, r *http.Request, f Fault, reject func(), work func()) bool {
	switch f.Kind {
	case Reject:
		reject()
	case Status:
		status := f.Status
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, "facilitatortest: injected fault", status)
	case Hang:
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
	case Drop:
		if work != nil {
			work()
		}
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler) // cuts the connection where hijacking can't
	default:
		return false
	}
	return true
}

func (s *Server) supported(w http.ResponseWriter, _ *http.Request) {
	if f, ok := s.nextFault("/supported"); ok && f.Kind == Status {
		http.Error(w, "facilitatortest: injected fault", orStatus(f.Status))
		return
	}
	kinds := make([]kind, 0, len(s.networks))
	for _, n := range s.networks {
		kinds = append(kinds, kind{X402Version: 2, Scheme: x402.SchemeExact, Network: n})
	}
	sum := sha256.Sum256([]byte("facilitatortest signer"))
	writeJSON(w, http.StatusOK, supportedAnswer{Kinds: kinds, Extensions: []string{},
		Signers: map[string][]string{"eip155:*": {"0x" + hex.EncodeToString(sum[:20])}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func address(s string) bool {
	if len(s) != 42 || !(strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X")) {
		return false
	}
	_, err := hex.DecodeString(s[2:])
	return err == nil
}

func decimal(s string) bool {
	if s == "" || len(s) > 78 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orStatus(status int) int {
	if status == 0 {
		return http.StatusServiceUnavailable
	}
	return status
}
