package mcp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/store"
)

// toolsListJSON renders the tools/list result: each tool with its price in
// the description and _meta, and its input schema.
func toolsListJSON(c *catalog.Catalog) []byte {
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
			InputSchema: schema, Meta: map[string]any{MetaPrice: t.PriceString(), MetaCurrency: t.Currency}})
	}
	b, err := json.Marshal(map[string]any{"tools": tools})
	if err != nil {
		panic(fmt.Sprintf("encode tools/list: %v", err)) // only strings and validated JSON
	}
	return b
}

// callTool runs tools/call through the engine. Protocol errors come back as
// a JSON-RPC error; tool errors as a result with isError.
func (s *server) callTool(r *http.Request, caller store.Caller, sid string, params json.RawMessage) (any, *rpcError) {
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
	res, err := s.engine.Call(r.Context(), engine.CallRequest{Caller: caller, Tool: p.Name, Key: key, Input: args, Header: r.Header})
	if err != nil {
		return toolError(err, key)
	}
	return toolResult(res, key), nil
}

// idempotencyKey picks the call's key: params._meta, then the
// Idempotency-Key header, then the derivation from (session, tool,
// canonical arguments).
func idempotencyKey(r *http.Request, meta map[string]json.RawMessage, sid, tool string, args []byte) (string, error) {
	if raw, ok := meta[MetaIdempotencyKey]; ok {
		var key string
		if err := json.Unmarshal(raw, &key); err != nil {
			return "", fmt.Errorf("%w: _meta[%q] must be a string", engine.ErrInvalidIdempotencyKey, MetaIdempotencyKey)
		}
		if err := engine.ValidateIdempotencyKey(key); err != nil {
			return "", fmt.Errorf("_meta[%q]: %w", MetaIdempotencyKey, err)
		}
		return key, nil
	}
	if keys := r.Header.Values("Idempotency-Key"); len(keys) > 0 {
		key, err := engine.ParseIdempotencyKey(keys)
		if err != nil {
			return "", err
		}
		return key, engine.ValidateIdempotencyKey(key)
	}
	canonical, err := engine.Canonicalize(args)
	if err != nil {
		return "", err
	}
	return DeriveKey(sid, tool, canonical), nil
}

// DeriveKey is the idempotency key of an MCP tools/call that sends none:
// "mcp:" and the hex SHA-256 of the session id, the tool and the canonical
// arguments (see engine.Canonicalize), joined by NUL bytes.
func DeriveKey(sessionID, tool string, canonicalArgs []byte) string {
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
func toolResult(res engine.CallResult, key string) map[string]any {
	var a storedAnswer
	_ = json.Unmarshal(res.Body, &a) // the engine stored it; a zero value still answers
	receipt := any(res.Receipt)
	if len(a.Receipt) > 0 {
		receipt = a.Receipt
	}
	meta := map[string]any{MetaReceipt: receipt, MetaReplayed: res.Replayed, MetaIdempotencyKey: key}
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
	p := problem.For(err)
	var inputErr *engine.InvalidInputError
	switch {
	case errors.Is(err, engine.ErrUnknownTool), errors.Is(err, engine.ErrInvalidIdempotencyKey), errors.As(err, &inputErr):
		return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: " + p.Detail}
	case p.Status == http.StatusInternalServerError:
		return nil, &rpcError{Code: rpcInternalError, Message: "Internal error: the gateway failed unexpectedly"}
	}
	var structured map[string]any
	b, _ := json.Marshal(p)
	_ = json.Unmarshal(b, &structured)
	slug := strings.TrimPrefix(p.Type, problem.TypeBase)
	code := strings.ReplaceAll(slug, "-", "_")
	if slug == "insufficient-funds" {
		code = "payment_required" // the x402-over-MCP name
	}
	structured["error"] = code
	return map[string]any{
		"isError":           true,
		"content":           []any{textContent(p.Title + ": " + p.Detail)},
		"structuredContent": structured,
		"_meta":             map[string]any{MetaIdempotencyKey: key},
	}, nil
}
