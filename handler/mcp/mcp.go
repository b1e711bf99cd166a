// Package mcp is the gateway's Model Context Protocol endpoint (streamable HTTP, JSON responses): JSON-RPC
// (rpc.go), self-validating sessions (session.go) and the translation of tools/list and tools/call to the
// engine (tools.go). It decides nothing about money: every call goes through the engine.
package mcp

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/pay/x402"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/store"
)

// DefaultMaxBodyBytes is the request body limit when Options.MaxBodyBytes
// is zero.
const DefaultMaxBodyBytes = 1 << 20

// ProtocolVersion is the Model Context Protocol revision the MCP endpoint
// speaks: JSON-RPC 2.0 over the streamable HTTP transport, answered with
// plain JSON (no SSE stream, no batches).
const ProtocolVersion = "2025-06-18"

// DefaultSessionTTL is how long an MCP session id stays valid when
// Options.SessionTTL is zero.
const DefaultSessionTTL = 24 * time.Hour

// The _meta keys the MCP endpoint reads and writes.
const (
	// MetaIdempotencyKey is the tools/call params._meta key holding the
	// client's idempotency key. The result's _meta echoes the key used,
	// given or derived, under the same name.
	MetaIdempotencyKey = "io.toolgate/idempotency-key"
	// MetaReceipt is the result's _meta key holding the engine.Receipt.
	MetaReceipt = "io.toolgate/receipt"
	// MetaReplayed is the result's _meta key that is true when the answer
	// was stored by an earlier request with the same key.
	MetaReplayed = "io.toolgate/replayed"
	// MetaPrice is a tool's _meta key in tools/list holding the price
	// per call as a decimal string, such as "0.05".
	MetaPrice = "io.toolgate/price"
	// MetaCurrency is a tool's _meta key in tools/list holding the
	// price's currency, such as "USD".
	MetaCurrency = "io.toolgate/currency"
	// MetaFree is a tool's _meta key in tools/list holding its free tier,
	// {"calls": N, "per": "hour"|"day"|"week"|"month"}: each caller's
	// first N calls per UTC window are free.
	MetaFree = "io.toolgate/free"
	// MetaMetered is a tool's _meta key in tools/list holding its metered
	// price, {"max": "1.00", "per": "0.001", "usageHeader": "Toolgate-Usage"}:
	// a call holds max and is charged the units its upstream reports times
	// per (rounded up to the minor unit, at most max); MetaPrice is max.
	MetaMetered = "io.toolgate/metered"
	// MetaX402Accepts is the _meta key in tools/list of a tool also sold
	// per call with x402 (Options.X402): its PaymentRequirements, as the
	// accepts of the payment-required result.
	MetaX402Accepts = "io.toolgate/x402-accepts"
)

// headerVersions are the MCP-Protocol-Version header values accepted:
// the revision we negotiate, and the one the spec says to assume when the
// header is missing.
var headerVersions = []string{ProtocolVersion, "2025-03-26"}

// Options configures New. The zero value works for a single process.
type Options struct {
	// SessionKey signs session ids (HMAC-SHA256), so any instance holding
	// the key validates a session without shared memory. Every instance
	// behind one URL (every Workers isolate) must use the same key, at least
	// 32 random bytes. Empty means a random key per New: sessions are then
	// valid only on the instance that issued them, and a client routed
	// elsewhere gets 404 and must initialize again.
	SessionKey []byte
	// SessionTTL is how long a session id is valid after initialize; zero
	// means DefaultSessionTTL.
	SessionTTL time.Duration
	// AllowedOrigins lists the Origin header values (such as
	// "https://app.example.com") accepted from browsers. A request carrying
	// any other Origin gets 403. Nil accepts no Origin; requests without the
	// header (every non-browser client) are not affected.
	AllowedOrigins []string
	// ServerVersion is serverInfo.version in the initialize result; empty
	// means "dev".
	ServerVersion string
	// MaxBodyBytes limits a POST body (413 above); zero means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// NowFunc is the clock for session expiry; nil means time.Now.
	NowFunc func() time.Time
	// X402 means the gateway sells tools per call with x402 (handler.New
	// sets it when a facilitator is configured): a request without an
	// Authorization header is then an anonymous agent's, which may
	// initialize, list the tools sold per call and call them with a
	// payment in params._meta["x402/payment"]. False (the zero value)
	// requires a caller key on every request and ignores x402 prices.
	X402 bool
}

// server is the MCP endpoint over one Engine.
type server struct {
	engine    *engine.Engine
	key       []byte // Options.SessionKey; see sessionKey
	keyOnce   sync.Once
	ttl       time.Duration
	origins   []string
	version   string
	maxBody   int64
	now       func() time.Time
	perCall   bool   // Options.X402
	toolsList []byte // the tools/list result, computed once
	anonList  []byte // the tools/list result of an anonymous session
	ended     endedSessions
}

// sessionKey returns the key that signs session ids: Options.SessionKey, or
// one drawn on first use. Drawn then, not in New: a worker may build its
// handler at start-up, where the random data is not yet the platform's.
func (s *server) sessionKey() []byte {
	s.keyOnce.Do(func() {
		if len(s.key) == 0 {
			s.key = make([]byte, 32)
			_, _ = rand.Read(s.key) // crypto/rand.Read never fails
		}
	})
	return s.key
}

// New returns the Model Context Protocol endpoint (streamable HTTP,
// revision ProtocolVersion) over e, the same engine as the REST API, so a
// tools/call gets the same guarantees as POST /v1/tools/{tool}/call: one
// charge and one upstream call per (caller, tool, idempotency key),
// wait-then-replay, refunds. Mount it at one path, such as /mcp; it serves
// POST (JSON-RPC messages), DELETE (end a session) and answers 405 to GET
// (no SSE stream) and to other methods.
//
// POST accepts one JSON-RPC message per request (2025-06-18 has no batches)
// and answers application/json. Methods: initialize (issues Mcp-Session-Id),
// notifications/* (202), ping, tools/list, tools/call. Every request except
// initialize and ping must carry the session id (400 when missing, 404 when
// it is unknown, expired, ended, or belongs to another caller).
//
// Callers authenticate with the same "Authorization: Bearer" keys as the
// REST API (401 otherwise). When the gateway sells per call (Options.X402),
// a request without an Authorization header is an anonymous agent's: its
// session lists only the tools sold per call, and its tools/call runs only
// with an x402 payment (else the payment-required result below); a tool
// not sold per call answers it an isError result with error
// "unauthorized" (the REST 401 problem). A present but invalid header is
// 401 either way. A present Origin must be in
// Options.AllowedOrigins (403 otherwise), and a present
// MCP-Protocol-Version must be 2025-06-18 or 2025-03-26 (400 otherwise).
//
// # Session ids
//
// A session id is self-validating: "tgs1." + base64url(issued-at, nonce) +
// "." + base64url(HMAC-SHA256(SessionKey, caller id, issued-at, nonce)), so
// it is bound to the caller without revealing the caller's id, and any
// instance with the key accepts it until SessionTTL runs out. DELETE ends a
// session in an in-memory list of the instance that received it; another
// instance (another Workers isolate) still accepts the id until it expires.
// A session id is not a credential (every request also needs the caller's
// key), so the limitation affects protocol hygiene, never money.
//
// # Idempotency keys
//
// A tools/call takes its key from, in order: params._meta
// ["io.toolgate/idempotency-key"]; the HTTP Idempotency-Key header; else
// "mcp:" + hex SHA-256 of (session id, tool, canonical arguments). The
// derived key makes a retried call in the same session the same paid action
// (one charge, a replayed answer), including an intentional repeat with
// identical arguments; a new session is a new action, so a client that
// reconnects and retries is charged again unless it sends its own key. The
// key is scoped per caller and tool like a REST key, so an MCP call and a
// REST call with the same caller, tool, key and input share one execution.
//
// # x402 over MCP
//
// The x402 MCP transport's tool-result binding: a tools/call may carry an
// x402 PaymentPayload (a JSON object) in params._meta["x402/payment"]; it
// pays for the call as a PAYMENT-SIGNATURE pays for a REST call (one
// payment, one key, settled only on success, replays never settle again),
// and the result's _meta["x402/payment-response"] holds the SettleResponse
// on first answers and replays. Its key is the _meta or header key, else
// the payment's (payment-identifier id, else nonce), so a retry with the
// same payment in a new session is the same action. Payment required for a
// tool sold per call (no payment, a refused payment, a settle refused, a
// short balance) is an isError result whose structuredContent is the x402
// PaymentRequired (its error the reason code, else "payment_required") with
// the REST problem under "problem" (an insufficient balance's topUp
// included), content[0] the same document as JSON text and content[1] what
// to do. tools/list shows a tool's offer in _meta["io.toolgate/x402-accepts"].
//
// # Results
//
// A 2xx answer is a result with content [{type: text, text: the output}],
// structuredContent (the output, when it is a JSON object) and _meta
// {"io.toolgate/receipt", "io.toolgate/replayed", "io.toolgate/idempotency-key"}.
// Payment required, an upstream failure (refunded, retryable), an upstream
// rejection (4xx, refunded, final for the key), a key reused with other
// arguments, a call still in progress and an unavailable store are results
// with isError true whose structuredContent is the REST API's problem object
// plus an "error" code (payment_required, upstream_failed, upstream_timeout,
// upstream_rejected, idempotency_key_mismatch, in_progress, ...), so the
// model sees them; payment required for a tool sold per call is the x402
// result above. Unknown tools, bad params and bad keys are JSON-RPC
// errors -32602, unknown methods -32601, malformed JSON -32700 (HTTP 400),
// an invalid message -32600 (HTTP 400), and an internal failure -32603.
func New(e *engine.Engine, opts Options) http.Handler {
	s := &server{engine: e, key: opts.SessionKey, ttl: opts.SessionTTL, origins: opts.AllowedOrigins,
		version: opts.ServerVersion, maxBody: opts.MaxBodyBytes, now: opts.NowFunc, perCall: opts.X402}
	if s.ttl <= 0 {
		s.ttl = DefaultSessionTTL
	}
	if s.version == "" {
		s.version = "dev"
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.toolsList = toolsListJSON(e.Catalog(), s.perCall, false)
	s.anonList = toolsListJSON(e.Catalog(), s.perCall, true)
	return s
}

// ServeHTTP implements http.Handler.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); o != "" && !slices.ContainsFunc(s.origins, func(a string) bool { return strings.EqualFold(a, o) }) {
		writeRPCError(w, http.StatusForbidden, nil, rpcTransportError, fmt.Sprintf("Forbidden: origin %q is not allowed", o))
		return
	}
	switch r.Method {
	case http.MethodPost:
		s.handlePost(w, r)
	case http.MethodDelete:
		s.handleDelete(w, r)
	default:
		w.Header().Set("Allow", "POST, DELETE")
		writeRPCError(w, http.StatusMethodNotAllowed, nil, rpcTransportError,
			"Method not allowed: this endpoint offers no SSE stream; POST one JSON-RPC message, or DELETE to end a session")
	}
}

// checkProtocolVersion validates a present MCP-Protocol-Version header, or
// writes 400.
func checkProtocolVersion(w http.ResponseWriter, r *http.Request) bool {
	v := r.Header.Get("MCP-Protocol-Version")
	if v == "" || slices.Contains(headerVersions, v) {
		return true
	}
	writeRPC(w, http.StatusBadRequest, rpcResponse{Error: &rpcError{Code: rpcTransportError,
		Message: fmt.Sprintf("Bad Request: unsupported MCP-Protocol-Version %q; this server speaks %s", v, ProtocolVersion),
		Data:    map[string]any{"supported": headerVersions, "requested": v}}})
	return false
}

// authenticate returns the request's caller, or writes 401 (503 when the
// store fails). When the gateway sells per call (Options.X402), a request
// without an Authorization header is anonymous: the zero Caller. A header
// that is present but not a valid key is 401 all the same.
func (s *server) authenticate(w http.ResponseWriter, r *http.Request) (store.Caller, bool) {
	if s.perCall && len(r.Header.Values("Authorization")) == 0 {
		return store.Caller{}, true
	}
	c, err := s.engine.Authenticate(r.Context(), engine.BearerToken(r))
	if err == nil {
		return c, true
	}
	p := problem.For(err)
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="toolgate"`)
		writeRPCError(w, http.StatusUnauthorized, nil, rpcTransportError,
			"Unauthorized: send a caller key as Authorization: Bearer <key>")
		return store.Caller{}, false
	}
	if p.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(p.RetryAfterSeconds()))
	}
	writeRPCError(w, p.Status, nil, rpcTransportError, p.Title+": "+p.Detail)
	return store.Caller{}, false
}

func (s *server) handlePost(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeRPCError(w, http.StatusUnsupportedMediaType, nil, rpcTransportError,
			"Unsupported Media Type: send one JSON-RPC message as Content-Type: application/json")
		return
	}
	if !acceptsJSON(r.Header.Values("Accept")) {
		writeRPCError(w, http.StatusNotAcceptable, nil, rpcTransportError,
			"Not Acceptable: this endpoint answers application/json")
		return
	}
	if !checkProtocolVersion(w, r) {
		return
	}
	caller, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeRPCError(w, http.StatusRequestEntityTooLarge, nil, rpcTransportError,
				fmt.Sprintf("Request Entity Too Large: the limit is %d bytes", s.maxBody))
			return
		}
		writeRPCError(w, http.StatusBadRequest, nil, rpcParseError, "Parse error: the body could not be read")
		return
	}
	msg, rpcErr := parseRPC(body)
	if rpcErr != nil {
		writeRPCError(w, http.StatusBadRequest, msg.ID, rpcErr.Code, rpcErr.Message)
		return
	}
	if msg.Method == nil || msg.ID == nil {
		// A notification, or a response to a request we never send: accept
		// it within a valid session, and ignore it.
		if _, ok := s.session(w, r, nil, caller, true); ok {
			w.WriteHeader(http.StatusAccepted)
		}
		return
	}
	method := *msg.Method
	if method == "initialize" {
		s.initialize(w, msg, caller)
		return
	}
	sid, ok := s.session(w, r, msg.ID, caller, method != "ping")
	if !ok {
		return
	}
	switch method {
	case "ping":
		writeRPC(w, http.StatusOK, rpcResponse{ID: msg.ID, Result: struct{}{}})
	case "tools/list":
		list := s.toolsList
		if caller.ID == "" {
			list = s.anonList
		}
		writeRPC(w, http.StatusOK, rpcResponse{ID: msg.ID, Result: json.RawMessage(list)})
	case "tools/call":
		result, rpcErr := s.callTool(r, caller, sid, msg.Params)
		if rpcErr != nil {
			writeRPC(w, http.StatusOK, rpcResponse{ID: msg.ID, Error: rpcErr})
			return
		}
		writeRPC(w, http.StatusOK, rpcResponse{ID: msg.ID, Result: result})
	default:
		writeRPC(w, http.StatusOK, rpcResponse{ID: msg.ID, Error: &rpcError{Code: rpcMethodNotFound,
			Message: fmt.Sprintf("Method not found: %q; this server offers initialize, ping, tools/list and tools/call", method)}})
	}
}

// acceptsJSON reports whether the Accept header values, if any, admit
// application/json.
func acceptsJSON(values []string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && (mt == "application/json" || mt == "application/*" || mt == "*/*") {
				return true
			}
		}
	}
	return false
}

// initialize answers initialize and issues a session id bound to caller.
// It always answers ProtocolVersion, the only revision it negotiates; a
// client that cannot speak it disconnects.
func (s *server) initialize(w http.ResponseWriter, msg rpcMessage, caller store.Caller) {
	var p struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if len(msg.Params) > 0 && json.Unmarshal(msg.Params, &p) != nil || p.ProtocolVersion == "" {
		writeRPC(w, http.StatusOK, rpcResponse{ID: msg.ID, Error: &rpcError{Code: rpcInvalidParams,
			Message: "Invalid params: initialize needs params.protocolVersion"}})
		return
	}
	w.Header().Set("Mcp-Session-Id", s.newSession(caller.ID, s.now()))
	instructions := "Every tool here is paid per call from your prepaid balance (the price is in each tool's " +
		"description and _meta). Duplicate calls with one idempotency key are charged and executed once and " +
		"replay the first answer; failures are refunded. Send params._meta[\"" + MetaIdempotencyKey + "\"] " +
		"to name the action; without it, identical calls in one session are the same action."
	if s.perCall {
		instructions += x402Instructions
	}
	if caller.ID == "" {
		instructions = "You are connected without an account: the tools listed are sold per call with x402. " +
			"Call one, and its payment-required result (isError) holds the x402 PaymentRequired in " +
			"structuredContent; sign a payment for one of its accepts and call again with it in " +
			"params._meta[\"" + x402.MetaPayment + "\"]. The payment is settled only if the tool succeeds, " +
			"and a retry with the same payment and idempotency key never pays twice."
	}
	writeRPC(w, http.StatusOK, rpcResponse{ID: msg.ID, Result: map[string]any{
		"protocolVersion": ProtocolVersion,
		"capabilities":    map[string]any{"tools": map[string]any{"listChanged": false}},
		"serverInfo":      map[string]any{"name": "toolgate", "version": s.version},
		"instructions":    instructions,
	}})
}

// handleDelete ends the session in the Mcp-Session-Id header.
func (s *server) handleDelete(w http.ResponseWriter, r *http.Request) {
	if !checkProtocolVersion(w, r) {
		return
	}
	caller, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	sid, ok := s.session(w, r, nil, caller, true)
	if !ok {
		return
	}
	s.ended.add(sid, s.sessionExpiry(sid), s.now())
	w.WriteHeader(http.StatusNoContent)
}
