package handler

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
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

	"github.com/toolgate/toolgate-go/store"
)

// MCPProtocolVersion is the Model Context Protocol revision the MCP endpoint
// speaks: JSON-RPC 2.0 over the streamable HTTP transport, answered with
// plain JSON (no SSE stream, no batches).
const MCPProtocolVersion = "2025-06-18"

// DefaultMCPSessionTTL is how long an MCP session id stays valid when
// MCPOptions.SessionTTL is zero.
const DefaultMCPSessionTTL = 24 * time.Hour

// The _meta keys the MCP endpoint reads and writes.
const (
	// MCPMetaIdempotencyKey is the tools/call params._meta key holding the
	// client's idempotency key. The result's _meta echoes the key used,
	// given or derived, under the same name.
	MCPMetaIdempotencyKey = "io.toolgate/idempotency-key"
	// MCPMetaReceipt is the result's _meta key holding the Receipt.
	MCPMetaReceipt = "io.toolgate/receipt"
	// MCPMetaReplayed is the result's _meta key that is true when the answer
	// was stored by an earlier request with the same key.
	MCPMetaReplayed = "io.toolgate/replayed"
	// MCPMetaPrice is a tool's _meta key in tools/list holding the price
	// per call as a decimal string, such as "0.05".
	MCPMetaPrice = "io.toolgate/price"
	// MCPMetaCurrency is a tool's _meta key in tools/list holding the
	// price's currency, such as "USD".
	MCPMetaCurrency = "io.toolgate/currency"
)

// mcpHeaderVersions are the MCP-Protocol-Version header values accepted:
// the revision we negotiate, and the one the spec says to assume when the
// header is missing.
var mcpHeaderVersions = []string{MCPProtocolVersion, "2025-03-26"}

// JSON-RPC error codes. -32000 is our transport-level rejection (origin,
// credentials, headers, session missing); -32001 is "session not found",
// as in the reference SDKs.
const (
	rpcParseError     = -32700
	rpcInvalidRequest = -32600
	rpcMethodNotFound = -32601
	rpcInvalidParams  = -32602
	rpcInternalError  = -32603
	rpcTransportError = -32000
	rpcSessionUnknown = -32001
)

// MCPOptions configures NewMCP. The zero value works for a single process.
type MCPOptions struct {
	// SessionKey signs session ids (HMAC-SHA256), so any instance holding
	// the key validates a session without shared memory. Every instance
	// behind one URL (every Workers isolate) must use the same key, at least
	// 32 random bytes. Empty means a random key per NewMCP: sessions are then
	// valid only on the instance that issued them, and a client routed
	// elsewhere gets 404 and must initialize again.
	SessionKey []byte
	// SessionTTL is how long a session id is valid after initialize; zero
	// means DefaultMCPSessionTTL.
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
}

// mcpServer is the MCP endpoint over one Engine.
type mcpServer struct {
	engine    *Engine
	key       []byte
	ttl       time.Duration
	origins   []string
	version   string
	maxBody   int64
	now       func() time.Time
	toolsList []byte // the tools/list result, computed once
	ended     endedSessions
}

// NewMCP returns the Model Context Protocol endpoint (streamable HTTP,
// revision MCPProtocolVersion) over e, the same engine as the REST API, so a
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
// REST API (401 otherwise). A present Origin must be in
// MCPOptions.AllowedOrigins (403 otherwise), and a present
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
// model sees them. Unknown tools, bad params and bad keys are JSON-RPC
// errors -32602, unknown methods -32601, malformed JSON -32700 (HTTP 400),
// an invalid message -32600 (HTTP 400), and an internal failure -32603.
func NewMCP(e *Engine, opts MCPOptions) http.Handler {
	s := &mcpServer{engine: e, key: opts.SessionKey, ttl: opts.SessionTTL, origins: opts.AllowedOrigins,
		version: opts.ServerVersion, maxBody: opts.MaxBodyBytes, now: opts.NowFunc}
	if len(s.key) == 0 {
		s.key = make([]byte, 32)
		_, _ = rand.Read(s.key) // crypto/rand.Read never fails
	}
	if s.ttl <= 0 {
		s.ttl = DefaultMCPSessionTTL
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
	s.toolsList = mcpToolsList(e.Catalog())
	return s
}

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

// rpcResponse is a JSON-RPC response: Result or Error.
type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

// rpcMessage is an incoming JSON-RPC message. A request has Method and ID,
// a notification Method only, a response ID and Result or Error. A nil
// RawMessage means the member was absent.
type rpcMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// ServeHTTP implements http.Handler.
func (s *mcpServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	if v == "" || slices.Contains(mcpHeaderVersions, v) {
		return true
	}
	writeRPC(w, http.StatusBadRequest, rpcResponse{Error: &rpcError{Code: rpcTransportError,
		Message: fmt.Sprintf("Bad Request: unsupported MCP-Protocol-Version %q; this server speaks %s", v, MCPProtocolVersion),
		Data:    map[string]any{"supported": mcpHeaderVersions, "requested": v}}})
	return false
}

// authenticate returns the request's caller, or writes 401 (503 when the
// store fails).
func (s *mcpServer) authenticate(w http.ResponseWriter, r *http.Request) (store.Caller, bool) {
	c, err := s.engine.Authenticate(r.Context(), bearer(r))
	if err == nil {
		return c, true
	}
	p := problemFor(err)
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="toolgate"`)
		writeRPCError(w, http.StatusUnauthorized, nil, rpcTransportError,
			"Unauthorized: send a caller key as Authorization: Bearer <key>")
		return store.Caller{}, false
	}
	if p.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(p.RetryAfter)))
	}
	writeRPCError(w, p.Status, nil, rpcTransportError, p.Title+": "+p.Detail)
	return store.Caller{}, false
}

// session validates the Mcp-Session-Id header for caller. When required is
// false a missing header is fine (ok, ""). Otherwise it writes 400 for a
// missing id and 404 for an unknown one.
func (s *mcpServer) session(w http.ResponseWriter, r *http.Request, id json.RawMessage, caller store.Caller, required bool) (string, bool) {
	sid := r.Header.Get("Mcp-Session-Id")
	if sid == "" {
		if !required {
			return "", true
		}
		writeRPCError(w, http.StatusBadRequest, id, rpcTransportError,
			"Bad Request: the Mcp-Session-Id header is required; send initialize first")
		return "", false
	}
	if !s.validSession(sid, caller.ID, s.now()) {
		writeRPCError(w, http.StatusNotFound, id, rpcSessionUnknown,
			"Session not found: it is unknown, expired or ended; send initialize to start a new session")
		return "", false
	}
	return sid, true
}

func (s *mcpServer) handlePost(w http.ResponseWriter, r *http.Request) {
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
		writeRPC(w, http.StatusOK, rpcResponse{ID: msg.ID, Result: json.RawMessage(s.toolsList)})
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

// parseRPC decodes one JSON-RPC message. On error, msg.ID holds the id when
// it could be read.
func parseRPC(body []byte) (rpcMessage, *rpcError) {
	var msg rpcMessage
	body = bytes.TrimSpace(body)
	if !json.Valid(body) {
		return msg, &rpcError{Code: rpcParseError, Message: "Parse error: the body is not one valid JSON value"}
	}
	// Before any recursive decoding (the id, params, arguments, _meta).
	if reason := checkJSON(body, MaxJSONDepth); reason != "" {
		return msg, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request: " + reason}
	}
	switch {
	case body[0] == '[':
		return msg, &rpcError{Code: rpcInvalidRequest,
			Message: "Invalid Request: JSON-RPC batches are not supported in MCP " + MCPProtocolVersion + "; send one message per request"}
	case body[0] != '{':
		return msg, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request: a JSON-RPC message is a JSON object"}
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		return rpcMessage{}, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request: jsonrpc and method must be strings"}
	}
	if msg.ID != nil && !validRPCID(msg.ID) {
		msg.ID = nil
		return msg, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request: id must be a string or a number"}
	}
	switch {
	case msg.JSONRPC != "2.0":
		return msg, &rpcError{Code: rpcInvalidRequest, Message: `Invalid Request: "jsonrpc" must be "2.0"`}
	case msg.Method == nil && (msg.ID == nil || msg.Result == nil && msg.Error == nil):
		return msg, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request: a message needs a method, or an id and a result or error"}
	case msg.Method != nil && *msg.Method == "":
		return msg, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request: method must not be empty"}
	}
	return msg, nil
}

// validRPCID reports whether id is a JSON string or number (MCP forbids null).
func validRPCID(id json.RawMessage) bool {
	var v any
	if err := json.Unmarshal(id, &v); err != nil {
		return false
	}
	switch v.(type) {
	case string, float64:
		return true
	}
	return false
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
// It always answers MCPProtocolVersion, the only revision it negotiates; a
// client that cannot speak it disconnects.
func (s *mcpServer) initialize(w http.ResponseWriter, msg rpcMessage, caller store.Caller) {
	var p struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if len(msg.Params) > 0 && json.Unmarshal(msg.Params, &p) != nil || p.ProtocolVersion == "" {
		writeRPC(w, http.StatusOK, rpcResponse{ID: msg.ID, Error: &rpcError{Code: rpcInvalidParams,
			Message: "Invalid params: initialize needs params.protocolVersion"}})
		return
	}
	w.Header().Set("Mcp-Session-Id", s.newSession(caller.ID, s.now()))
	writeRPC(w, http.StatusOK, rpcResponse{ID: msg.ID, Result: map[string]any{
		"protocolVersion": MCPProtocolVersion,
		"capabilities":    map[string]any{"tools": map[string]any{"listChanged": false}},
		"serverInfo":      map[string]any{"name": "toolgate", "version": s.version},
		"instructions": "Every tool here is paid per call from your prepaid balance (the price is in each tool's " +
			"description and _meta). Duplicate calls with one idempotency key are charged and executed once and " +
			"replay the first answer; failures are refunded. Send params._meta[\"" + MCPMetaIdempotencyKey + "\"] " +
			"to name the action; without it, identical calls in one session are the same action.",
	}})
}

// mcpToolsList renders the tools/list result: each tool with its price in
// the description and _meta, and its input schema.
func mcpToolsList(c *Catalog) []byte {
	type mcpTool struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		InputSchema json.RawMessage `json:"inputSchema"`
		Meta        map[string]any  `json:"_meta"`
	}
	tools := []mcpTool{}
	for _, t := range c.Tools() {
		price := "Price: free."
		if t.Price > 0 {
			price = fmt.Sprintf("Price: %s %s per call, charged once per idempotency key and refunded if the tool fails.",
				t.PriceString(), t.Currency)
		}
		schema := t.InputSchema
		if len(schema) == 0 {
			schema = json.RawMessage(`{"type":"object"}`)
		}
		tools = append(tools, mcpTool{Name: t.Name, Description: strings.TrimSpace(t.Description) + "\n\n" + price,
			InputSchema: schema, Meta: map[string]any{MCPMetaPrice: t.PriceString(), MCPMetaCurrency: t.Currency}})
	}
	b, err := json.Marshal(map[string]any{"tools": tools})
	if err != nil {
		panic(fmt.Sprintf("encode tools/list: %v", err)) // only strings and validated JSON
	}
	return b
}

// callTool runs tools/call through the engine. Protocol errors come back as
// a JSON-RPC error; tool errors as a result with isError.
func (s *mcpServer) callTool(r *http.Request, caller store.Caller, sid string, params json.RawMessage) (any, *rpcError) {
	var p struct {
		Name      string                     `json:"name"`
		Arguments json.RawMessage            `json:"arguments"`
		Meta      map[string]json.RawMessage `json:"_meta"`
	}
	if len(params) == 0 || json.Unmarshal(params, &p) != nil {
		return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: tools/call needs params {name, arguments}"}
	}
	if p.Name == "" {
		return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: params.name is required"}
	}
	args := bytes.TrimSpace(p.Arguments)
	if len(args) == 0 || string(args) == "null" {
		args = []byte("{}")
	}
	if args[0] != '{' {
		return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: params.arguments must be a JSON object"}
	}
	key, err := idempotencyKey(r, p.Meta, sid, p.Name, args)
	if err != nil {
		return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: " + err.Error()}
	}
	res, err := s.engine.Call(r.Context(), CallRequest{Caller: caller, Tool: p.Name, Key: key, Input: args, Header: r.Header})
	if err != nil {
		return toolError(err, key)
	}
	return toolResult(res, key), nil
}

// idempotencyKey picks the call's key: params._meta, then the
// Idempotency-Key header, then the derivation from (session, tool,
// canonical arguments).
func idempotencyKey(r *http.Request, meta map[string]json.RawMessage, sid, tool string, args []byte) (string, error) {
	if raw, ok := meta[MCPMetaIdempotencyKey]; ok {
		var key string
		if err := json.Unmarshal(raw, &key); err != nil {
			return "", fmt.Errorf("%w: _meta[%q] must be a string", ErrInvalidIdempotencyKey, MCPMetaIdempotencyKey)
		}
		if err := ValidateIdempotencyKey(key); err != nil {
			return "", fmt.Errorf("_meta[%q]: %w", MCPMetaIdempotencyKey, err)
		}
		return key, nil
	}
	if keys := r.Header.Values("Idempotency-Key"); len(keys) > 0 {
		key, err := ParseIdempotencyKey(keys)
		if err != nil {
			return "", err
		}
		return key, ValidateIdempotencyKey(key)
	}
	canonical, err := Canonicalize(args)
	if err != nil {
		return "", err
	}
	return DeriveMCPKey(sid, tool, canonical), nil
}

// DeriveMCPKey is the idempotency key of an MCP tools/call that sends none:
// "mcp:" and the hex SHA-256 of the session id, the tool and the canonical
// arguments (see Canonicalize), joined by NUL bytes.
func DeriveMCPKey(sessionID, tool string, canonicalArgs []byte) string {
	h := sha256.New()
	h.Write([]byte("toolgate-mcp-key\x00" + sessionID + "\x00" + tool + "\x00"))
	h.Write(canonicalArgs)
	return "mcp:" + hex.EncodeToString(h.Sum(nil))
}

// storedAnswer is the part of the engine's stored envelope a result uses.
type storedAnswer struct {
	Output   json.RawMessage `json:"output"`
	Upstream struct {
		Encoding string `json:"encoding"`
	} `json:"upstream"`
	Receipt json.RawMessage `json:"receipt"`
}

// toolResult turns an engine answer into a CallToolResult. A 2xx is a
// success; the stored 424 (the upstream rejected the input) is an isError
// result holding the stored problem.
func toolResult(res CallResult, key string) map[string]any {
	var a storedAnswer
	_ = json.Unmarshal(res.Body, &a) // the engine stored it; a zero value still answers
	receipt := any(res.Receipt)
	if len(a.Receipt) > 0 {
		receipt = a.Receipt
	}
	meta := map[string]any{MCPMetaReceipt: receipt, MCPMetaReplayed: res.Replayed, MCPMetaIdempotencyKey: key}
	if res.StatusCode >= 300 {
		var problem map[string]any
		_ = json.Unmarshal(res.Body, &problem)
		if problem == nil {
			problem = map[string]any{}
		}
		problem["error"] = "upstream_rejected"
		title, _ := problem["title"].(string)
		detail, _ := problem["detail"].(string)
		text := title + ": " + detail
		if out := outputText(a); out != "" {
			text += "\n\nThe tool answered:\n" + out
		}
		return map[string]any{"isError": true, "content": []any{textContent(text)},
			"structuredContent": problem, "_meta": meta}
	}
	out := map[string]any{"content": []any{textContent(outputText(a))}, "_meta": meta}
	if o := bytes.TrimSpace(a.Output); len(o) > 0 && o[0] == '{' {
		out["structuredContent"] = json.RawMessage(o)
	}
	return out
}

// outputText renders the stored output as text: a text or base64 body as
// its string, JSON as itself.
func outputText(a storedAnswer) string {
	if a.Upstream.Encoding == "text" || a.Upstream.Encoding == "base64" {
		var s string
		if json.Unmarshal(a.Output, &s) == nil {
			return s
		}
	}
	if len(a.Output) == 0 || string(a.Output) == "null" {
		return ""
	}
	return string(a.Output)
}

func textContent(text string) map[string]any {
	return map[string]any{"type": "text", "text": text}
}

// toolError maps an engine error. The caller's own mistakes about the
// request (unknown tool, bad key, bad input) are JSON-RPC errors -32602;
// an internal failure is -32603; everything else (payment required,
// upstream failure, key mismatch, in progress, store unavailable) is a
// result with isError and the REST problem as structuredContent.
func toolError(err error, key string) (any, *rpcError) {
	p := problemFor(err)
	var inputErr *InvalidInputError
	switch {
	case errors.Is(err, ErrUnknownTool), errors.Is(err, ErrInvalidIdempotencyKey), errors.As(err, &inputErr):
		return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: " + p.Detail}
	case p.Status == http.StatusInternalServerError:
		return nil, &rpcError{Code: rpcInternalError, Message: "Internal error: the gateway failed unexpectedly"}
	}
	var structured map[string]any
	b, _ := json.Marshal(p)
	_ = json.Unmarshal(b, &structured)
	slug := strings.TrimPrefix(p.Type, ProblemTypeBase)
	code := strings.ReplaceAll(slug, "-", "_")
	if slug == "insufficient-funds" {
		code = "payment_required" // the x402-over-MCP name
	}
	structured["error"] = code
	return map[string]any{
		"isError":           true,
		"content":           []any{textContent(p.Title + ": " + p.Detail)},
		"structuredContent": structured,
		"_meta":             map[string]any{MCPMetaIdempotencyKey: key},
	}, nil
}

// handleDelete ends the session in the Mcp-Session-Id header.
func (s *mcpServer) handleDelete(w http.ResponseWriter, r *http.Request) {
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

const sessionPrefix = "tgs1."

// newSession returns a session id for callerID issued at now.
func (s *mcpServer) newSession(callerID string, now time.Time) string {
	var p [24]byte // issued-at (unix seconds), 16-byte nonce
	binary.BigEndian.PutUint64(p[:8], uint64(now.Unix()))
	_, _ = rand.Read(p[8:])
	enc := base64.RawURLEncoding
	return sessionPrefix + enc.EncodeToString(p[:]) + "." + enc.EncodeToString(s.sessionMAC(callerID, p[:]))
}

func (s *mcpServer) sessionMAC(callerID string, payload []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("toolgate-mcp-session\x00" + callerID + "\x00"))
	m.Write(payload)
	return m.Sum(nil)[:16]
}

// parseSession returns the payload of a well-formed id, or nil.
func parseSession(sid string) (payload, mac []byte) {
	rest, ok := strings.CutPrefix(sid, sessionPrefix)
	if !ok {
		return nil, nil
	}
	p64, m64, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, nil
	}
	// Strict: one spelling per id, so an ended session can't be revived
	// under another spelling (other unused trailing bits).
	enc := base64.RawURLEncoding.Strict()
	payload, err1 := enc.DecodeString(p64)
	mac, err2 := enc.DecodeString(m64)
	if err1 != nil || err2 != nil || len(payload) != 24 || len(mac) != 16 {
		return nil, nil
	}
	return payload, mac
}

// sessionExpiry is when a well-formed session id expires.
func (s *mcpServer) sessionExpiry(sid string) time.Time {
	payload, _ := parseSession(sid)
	if payload == nil {
		return time.Time{}
	}
	return time.Unix(int64(binary.BigEndian.Uint64(payload[:8])), 0).Add(s.ttl)
}

// validSession reports whether sid was issued by this key to callerID, has
// not expired, and was not ended here.
func (s *mcpServer) validSession(sid, callerID string, now time.Time) bool {
	payload, mac := parseSession(sid)
	if payload == nil || !hmac.Equal(mac, s.sessionMAC(callerID, payload)) {
		return false
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(payload[:8])), 0)
	if !now.Before(issued.Add(s.ttl)) || issued.After(now.Add(time.Minute)) {
		return false
	}
	return !s.ended.has(sid, now)
}

// endedSessions is the in-memory list of sessions ended by DELETE, each kept
// until it would have expired anyway.
type endedSessions struct {
	mu sync.Mutex
	m  map[string]time.Time // session id -> expiry
}

// maxEndedSessions bounds the list; past it the oldest-expiring are
// forgotten first, which only lets an ended id be used again.
const maxEndedSessions = 1 << 16

func (e *endedSessions) add(sid string, expires, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]time.Time{}
	}
	if len(e.m) >= maxEndedSessions {
		var oldest string
		for k, exp := range e.m {
			if !now.Before(exp) {
				delete(e.m, k)
			} else if oldest == "" || exp.Before(e.m[oldest]) {
				oldest = k
			}
		}
		if len(e.m) >= maxEndedSessions {
			delete(e.m, oldest)
		}
	}
	e.m[sid] = expires
}

func (e *endedSessions) has(sid string, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	exp, ok := e.m[sid]
	return ok && now.Before(exp)
}

// writeRPC writes one JSON-RPC response as application/json.
func writeRPC(w http.ResponseWriter, status int, res rpcResponse) {
	res.JSONRPC = "2.0"
	if res.ID == nil {
		res.ID = json.RawMessage("null")
	}
	b, err := marshalNoEscape(res)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"Internal error"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeRPCError(w http.ResponseWriter, status int, id json.RawMessage, code int, message string) {
	writeRPC(w, status, rpcResponse{ID: id, Error: &rpcError{Code: code, Message: message}})
}
