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
	"github.com/toolgate/toolgate-go/handler/pay/x402"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/handler/safejson"
	"github.com/toolgate/toolgate-go/store"
)

// x402Instructions is added to initialize's instructions when the gateway
// sells per call.
const x402Instructions = " Tools whose _meta has \"" + MetaX402Accepts + "\" are also sold per call with x402, " +
	"to agents without an account or a balance: their payment-required result (isError) holds the x402 " +
	"PaymentRequired in structuredContent; sign a payment for one of its accepts and call again with it in " +
	"params._meta[\"" + x402.MetaPayment + "\"] and the same idempotency key."

// toolsListJSON renders the tools/list result: each tool with its price in
// the description and _meta, and its input schema. When perCall, a tool
// with an x402 price also has its x402 offer in the description and in
// _meta[MetaX402Accepts]; anonymous lists only those tools.
func toolsListJSON(c *catalog.Catalog, perCall, anonymous bool) []byte {
	type mcpTool struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		InputSchema json.RawMessage `json:"inputSchema"`
		Meta        map[string]any  `json:"_meta"`
	}
	tools := []mcpTool{}
	for _, t := range c.Tools() {
		sold := perCall && t.X402 != nil
		if anonymous && !sold {
			continue
		}
		price := "Price: free."
		if t.Price > 0 {
			price = fmt.Sprintf("Price: %s %s per call, charged once per idempotency key and refunded if the tool fails.",
				t.PriceString(), t.Currency)
		}
		schema := t.InputSchema
		if len(schema) == 0 {
			schema = json.RawMessage(`{"type":"object"}`)
		}
		meta := map[string]any{MetaPrice: t.PriceString(), MetaCurrency: t.Currency}
		if m := t.Metered; m != nil {
			meta[MetaMetered] = t.MeteredTerms()
			price = fmt.Sprintf("Price: metered, %s %s per unit used, at most %s per call: the maximum is held while "+
				"the tool runs and what it did not use is given back at once; charged once per idempotency key and "+
				"refunded whole if the tool fails.", m.Per, t.Currency, t.PriceString())
		}
		if f := t.Free; f != nil {
			meta[MetaFree] = map[string]any{"calls": f.Calls, "per": f.Per}
			then := "then the price applies"
			if t.Price <= 0 {
				then = "then calls are refused (429) until the window resets"
			}
			price = fmt.Sprintf("Free tier: your first %d calls per %s (UTC) are free, %s. ", f.Calls, f.Per, then) + price
		}
		if sold {
			req := x402.Offer(*t.X402).Requirements()
			meta[MetaX402Accepts] = []x402.PaymentRequirements{req}
			price += fmt.Sprintf(" Also sold per call with x402, without an account: %s atomic units of %s on %s, "+
				"paid to %s and settled only if the tool succeeds. Call without a payment to get the offer "+
				"(an isError result with the x402 PaymentRequired in structuredContent), then call again with the "+
				"signed payment in params._meta[%q]. When you retry a paid call, reuse the same "+
				"params._meta[%q] and the same payment: it is executed and settled once.",
				req.Amount, req.Asset, req.Network, req.PayTo, x402.MetaPayment, MetaIdempotencyKey)
		}
		tools = append(tools, mcpTool{Name: t.Name, Description: strings.TrimSpace(t.Description) + "\n\n" + price,
			InputSchema: schema, Meta: meta})
	}
	b, err := json.Marshal(map[string]any{"tools": tools})
	if err != nil {
		panic(fmt.Sprintf("encode tools/list: %v", err)) // only strings and validated JSON
	}
	return b
}

// callTool runs tools/call through the engine. Protocol errors come back as
// a JSON-RPC error; tool errors as a result with isError.
//
// A call with params._meta["x402/payment"] is paid per call: the payment
// is matched to the tool's x402 offer and the engine binds it to the key,
// verifies it, runs the tool and settles it on success, whoever the
// session's caller is (the payer's address scopes the key, as on the REST
// API). Its key is the _meta or header key, else the payment's own (its
// payment-identifier id, else its nonce), never the session's derivation,
// so the same payment names the same action in any session.
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
	t, ok := s.engine.Catalog().Tool(p.Name)
	if !ok {
		return s.toolError(r, t, fmt.Errorf("%w: %q", engine.ErrUnknownTool, p.Name), "")
	}
	args := bytes.TrimSpace(p.Arguments)
	if len(args) == 0 || string(args) == "null" {
		args = []byte("{}")
	}
	if args[0] != '{' {
		return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: params.arguments must be a JSON object"}
	}
	key, given, err := explicitKey(r, p.Meta)
	if err != nil {
		return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: " + err.Error()}
	}
	if raw, ok := p.Meta[x402.MetaPayment]; ok {
		return s.callPaid(r, t, key, args, raw)
	}
	if !given {
		canonical, err := engine.Canonicalize(args)
		if err != nil {
			return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: " + err.Error()}
		}
		key = DeriveKey(sid, p.Name, canonical)
	}
	res, err := s.engine.Call(r.Context(), engine.CallRequest{Caller: caller, Tool: p.Name, Key: key, Input: args, Header: r.Header})
	if err != nil {
		return s.toolError(r, t, err, key)
	}
	return toolResult(res, key), nil
}

// callPaid runs a tools/call that carries an x402 payment (raw, the
// _meta["x402/payment"] value). key is "" when the call names none. A
// payment that does not decode or does not pay the tool's offer is a
// payment-required result with the reason, and nothing runs. The result
// carries the receipt, on first answers and replays, in
// _meta["x402/payment-response"].
func (s *server) callPaid(r *http.Request, t catalog.Tool, key string, args, raw json.RawMessage) (any, *rpcError) {
	ctx := r.Context()
	e := s.engine
	start := e.Now()
	if !s.perCall || t.X402 == nil {
		return s.toolError(r, t, fmt.Errorf("%w: %q", engine.ErrPerCallDisabled, t.Name), key)
	}
	refuse := func(err error) (any, *rpcError) {
		e.LogRejected(ctx, "", t.Name, start, err)
		return s.toolError(r, t, err, key)
	}
	payment, err := x402.DecodePaymentJSON(raw)
	if err != nil {
		return refuse(&engine.PaymentRequiredError{X402: t.X402, Reason: x402.ReasonFor(err), Detail: err.Error()})
	}
	pp, err := x402.PaymentFor(payment, x402.Offer(*t.X402), e.Now())
	if errors.Is(err, x402.ErrExpired) {
		pp, err = x402.PaymentForExpired(payment, x402.Offer(*t.X402))
	}
	if err != nil {
		return refuse(&engine.PaymentRequiredError{X402: t.X402, Reason: x402.ReasonFor(err), Detail: err.Error()})
	}
	if key == "" {
		key = pp.KeyHint // what the engine uses
	}
	res, err := e.Call(ctx, engine.CallRequest{Tool: t.Name, Key: key, Input: args, Header: r.Header, Payment: &pp})
	if err != nil {
		return s.toolError(r, t, err, key)
	}
	out := toolResult(res, key)
	if res.Payment != nil {
		out["_meta"].(map[string]any)[x402.MetaPaymentResponse] = x402.Receipt(pp, string(res.Payment.State), res.Payment.Transaction)
	}
	return out, nil
}

// explicitKey is the key the call names: params._meta, then the
// Idempotency-Key header. given is false when it names none.
func explicitKey(r *http.Request, meta map[string]json.RawMessage) (key string, given bool, err error) {
	if raw, ok := meta[MetaIdempotencyKey]; ok {
		if err := json.Unmarshal(raw, &key); err != nil {
			return "", true, fmt.Errorf("%w: _meta[%q] must be a string", engine.ErrInvalidIdempotencyKey, MetaIdempotencyKey)
		}
		if err := engine.ValidateIdempotencyKey(key); err != nil {
			return "", true, fmt.Errorf("_meta[%q]: %w", MetaIdempotencyKey, err)
		}
		return key, true, nil
	}
	if keys := r.Header.Values("Idempotency-Key"); len(keys) > 0 {
		key, err := engine.ParseIdempotencyKey(keys)
		if err != nil {
			return "", true, err
		}
		return key, true, engine.ValidateIdempotencyKey(key)
	}
	return "", false, nil
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

// toolError maps an engine error for tool t (the zero Tool when unknown).
// The caller's own mistakes about the request (unknown tool, bad key, bad
// input) are JSON-RPC errors -32602 (an input that fails the tool's
// inputSchema with the problem type and the violations as data); an
// internal failure is -32603; everything else (payment required, upstream
// failure, key mismatch, in progress, store unavailable, unauthorized for an
// anonymous session) is a result with isError and the REST problem as
// structuredContent, except a payment required for a tool sold per call
// (paymentRequired).
func (s *server) toolError(r *http.Request, t catalog.Tool, err error, key string) (any, *rpcError) {
	p := problem.For(err)
	var inputErr *engine.InvalidInputError
	var schemaErr *engine.InputSchemaError
	switch {
	case errors.As(err, &schemaErr):
		return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: " + p.Detail,
			Data: map[string]any{"type": p.Type, "violations": schemaErr.Violations}}
	case errors.Is(err, engine.ErrUnknownTool), errors.Is(err, engine.ErrInvalidIdempotencyKey), errors.As(err, &inputErr):
		return nil, &rpcError{Code: rpcInvalidParams, Message: "Invalid params: " + p.Detail}
	case p.Status == http.StatusInternalServerError:
		return nil, &rpcError{Code: rpcInternalError, Message: "Internal error: the gateway failed unexpectedly"}
	}
	structured := problemObject(p)
	if p.Status == http.StatusPaymentRequired && s.perCall && t.X402 != nil {
		return s.paymentRequired(r, t, err, structured, key), nil
	}
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

// problemObject is p as a JSON object.
func problemObject(p problem.Problem) map[string]any {
	var m map[string]any
	b, _ := json.Marshal(p)
	_ = json.Unmarshal(b, &m)
	if m == nil {
		m = map[string]any{}
	}
	return m
}

// paymentRequired is the x402 MCP transport's payment-required result for
// tool t, sold per call: isError, structuredContent the x402
// PaymentRequired (its error the refused payment's reason, else
// "payment_required") with the REST problem (an insufficient balance's
// topUp and shortfall included) under "problem", content[0] the same
// document as JSON text, as the transport requires, and content[1] what
// to do, in words.
func (s *server) paymentRequired(r *http.Request, t catalog.Tool, err error, prob map[string]any, key string) map[string]any {
	reason := ""
	var pr *engine.PaymentRequiredError
	if errors.As(err, &pr) {
		reason = pr.Reason
	}
	doc := x402.Required(resourceOf(r, t), x402.Offer(*t.X402), reason)
	if doc.Error == "" {
		doc.Error = "payment_required"
	}
	structured := map[string]any{}
	b, _ := json.Marshal(doc)
	_ = json.Unmarshal(b, &structured)
	structured["problem"] = prob
	docJSON, _ := safejson.MarshalNoEscape(structured)

	var why string
	switch {
	case reason != "":
		why = fmt.Sprintf("The payment was refused (%s): %s. It was not settled, and no answer is given for it.", reason, pr.Detail)
	case pr != nil && pr.Funds != nil:
		why = "Your prepaid balance does not cover this call (" + fmt.Sprint(prob["detail"]) + ")."
	default:
		why = "This tool is paid per call with x402."
	}
	how := fmt.Sprintf(" To pay per call, sign an x402 payment (version 2, scheme exact) for one of structuredContent.accepts "+
		"and call the tool again with it in params._meta[%q], keeping the same params._meta[%q]%s. The payment is "+
		"settled only if the tool succeeds; its receipt comes back in the result's _meta[%q].",
		x402.MetaPayment, MetaIdempotencyKey, keyHint(key), x402.MetaPaymentResponse)
	return map[string]any{
		"isError":           true,
		"content":           []any{textContent(string(docJSON)), textContent("Payment required. " + why + how)},
		"structuredContent": json.RawMessage(docJSON),
		"_meta":             map[string]any{MetaIdempotencyKey: key},
	}
}

// keyHint names key for the payment-required text.
func keyHint(key string) string {
	if key == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", key)
}

// resourceOf names the paid resource of a tools/call: the tool at this
// endpoint, as mcp://host/tools/name.
func resourceOf(r *http.Request, t catalog.Tool) x402.ResourceInfo {
	return x402.ResourceInfo{URL: "mcp://" + r.Host + "/tools/" + t.Name, Description: t.Description,
		MimeType: "application/json"}
}
