package mcp

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/toolgate/toolgate-go/handler/safejson"
)

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

// parseRPC decodes one JSON-RPC message. On error, msg.ID holds the id when
// it could be read.
func parseRPC(body []byte) (rpcMessage, *rpcError) {
	var msg rpcMessage
	body = bytes.TrimSpace(body)
	if !json.Valid(body) {
		return msg, &rpcError{Code: rpcParseError, Message: "Parse error: the body is not one valid JSON value"}
	}
	// Before any recursive decoding (the id, params, arguments, _meta).
	if reason := safejson.Check(body, safejson.MaxDepth); reason != "" {
		return msg, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request: " + reason}
	}
	switch {
	case body[0] == '[':
		return msg, &rpcError{Code: rpcInvalidRequest,
			Message: "Invalid Request: JSON-RPC batches are not supported in MCP " + ProtocolVersion + "; send one message per request"}
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

// writeRPC writes one JSON-RPC response as application/json.
func writeRPC(w http.ResponseWriter, status int, res rpcResponse) {
	res.JSONRPC = "2.0"
	if res.ID == nil {
		res.ID = json.RawMessage("null")
	}
	b, err := safejson.MarshalNoEscape(res)
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
