// Package catalog is what the gateway sells: the tools, their prices and upstreams, parsed from one JSON
// document (the TOOLS variable) and validated at start-up.
package catalog

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/handler/jsonschema"
	"github.com/toolgate/toolgate-go/handler/safejson"
	"github.com/toolgate/toolgate-go/store"
)

// DefaultToolTimeout is a tool's upstream timeout when the catalog leaves
// "timeout" out.
const DefaultToolTimeout = 30 * time.Second

// DefaultToolLease is a tool's lease when the catalog leaves "lease" out.
const DefaultToolLease = 10 * time.Second

// Tool is one paid tool of the catalog.
type Tool struct {
	Name        string
	Description string
	Price       int64  // minor units of Currency; 0 is a free tool
	Currency    string // a currency store.Decimals knows
	URL         string // absolute http(s) URL of the upstream
	Method      string // POST, PUT or PATCH; the canonical input is the body
	Timeout     time.Duration
	// Lease is how long a claim holds the key without a heartbeat. The
	// engine heartbeats every Lease/3 while the upstream runs.
	Lease time.Duration
	// TTL is how long the result stays replayable; zero means store.DefaultTTL.
	TTL time.Duration
	// Headers are sent as is on every upstream request.
	Headers map[string]string
	// ForwardHeaders names caller request headers copied to the upstream
	// request (canonical form). They are not part of the fingerprint.
	ForwardHeaders []string
	// InputSchema is the JSON Schema of the input (for MCP's tools/list);
	// {"type":"object"} when the document leaves it out.
	InputSchema json.RawMessage
	// Schema is InputSchema compiled (package jsonschema): the engine checks
	// every input against it before the claim. Nil when the document leaves
	// inputSchema out: such a tool takes any JSON input.
	Schema *jsonschema.Schema
	// X402, when set, also sells the tool per call for an x402 payment, to
	// agents without an account (or whose balance is short).
	X402 *X402
	// Free, when set, gives each caller its first Free.Calls calls per
	// window free; past them Price applies (a tool of price 0 then answers
	// 429 quota-exhausted until the window resets).
	Free *Free
	// Metered, when set, makes Price the maximum of a metered price: the
	// call holds it and is charged what the upstream reports it used.
	Metered *Metered
	// Fallback names the tool whose answer a caller gets instead of 402
	// when this one cannot be paid for (an insufficient balance, a debt, a
	// spending cap): catalog "onPaymentFailed": "fallback" with
	// "fallback": "<tool>". "" blocks (402). The fallback tool costs no
	// more, in the same currency, and has no fallback of its own.
	Fallback string
}

// Free is a tool's free tier: Calls calls per caller per UTC window of
// length Per (weeks start on Monday).
type Free struct {
	Calls int64
	Per   store.Period
}

// X402 is a tool's price in x402: an "exact" payment of Amount atomic units
// of the token Asset on Network, paid to PayTo.
type X402 struct {
	Network string // CAIP-2 "eip155:<chain id>"
	Asset   string // the token's contract, 0x and 40 hex digits
	PayTo   string // 0x and 40 hex digits
	// Amount is in the token's atomic units. The document may leave it out
	// for a USDC or USD price: a 6-decimal USD token then costs the price
	// (USDC's minor units are its atomic units; a USD price in cents is
	// multiplied by 10^4).
	Amount int64
	// Currency is the ledger's name for the token's unit, "USDC", in which
	// a payment settled for an answer that could not be delivered is
	// credited back to the payer's prepaid balance.
	Currency          string
	MaxTimeoutSeconds int // default 60
	Extra             json.RawMessage
}

// PriceString renders the price as a decimal string, e.g. "0.05".
func (t Tool) PriceString() string { return store.FormatAmount(t.Price, t.Currency) }

// Catalog is the validated, immutable set of tools.
type Catalog struct {
	tools  []Tool
	byName map[string]int
}

// Tools returns the tools in document order. The slice is a copy.
func (c *Catalog) Tools() []Tool { return append([]Tool(nil), c.tools...) }

// Tool returns the tool called name.
func (c *Catalog) Tool(name string) (Tool, bool) {
	i, ok := c.byName[name]
	if !ok {
		return Tool{}, false
	}
	return c.tools[i], true
}

// Currencies returns the distinct currencies of the catalog, sorted.
func (c *Catalog) Currencies() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range c.tools {
		if !seen[t.Currency] {
			seen[t.Currency] = true
			out = append(out, t.Currency)
		}
	}
	sort.Strings(out)
	return out
}

type catalogDoc struct {
	Tools []json.RawMessage `json:"tools"`
}

type toolDoc struct {
	Name            string          `json:"name"`
	Description     string          `json:"description"`
	Price           json.RawMessage `json:"price"`
	Currency        string          `json:"currency"`
	Upstream        *upstreamDoc    `json:"upstream"`
	Timeout         string          `json:"timeout"`
	Lease           string          `json:"lease"`
	TTL             string          `json:"ttl"`
	ForwardHeaders  []string        `json:"forwardHeaders"`
	InputSchema     json.RawMessage `json:"inputSchema"`
	X402            *x402Doc        `json:"x402"`
	Free            *freeDoc        `json:"free"`
	OnPaymentFailed string          `json:"onPaymentFailed"`
	Fallback        string          `json:"fallback"`
}

type freeDoc struct {
	Calls json.RawMessage `json:"calls"`
	Per   string          `json:"per"`
}

type x402Doc struct {
	Network           string          `json:"network"`
	Asset             string          `json:"asset"`
	PayTo             string          `json:"payTo"`
	Amount            string          `json:"amount"`
	MaxTimeoutSeconds int             `json:"maxTimeoutSeconds"`
	Extra             json.RawMessage `json:"extra"`
}

type upstreamDoc struct {
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Headers map[string]string `json:"headers"`
}

// ValidName reports whether s is 1-64 bytes of A-Z a-z 0-9 and extra. (No
// regexp: the package is also compiled into the size-bound worker.)
func ValidName(s, extra string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}

// validHeaderName reports whether s is an RFC 9110 token of at most 64 bytes.
func validHeaderName(s string) bool { return ValidName(s, "!#$%&'*+-.^_`|~") }

// unforwardable are request headers a tool may neither forward nor set:
// the caller's credentials, the gateway's own idempotency key, and
// hop-by-hop or framing headers.
var unforwardable = map[string]bool{
	"Authorization": true, "Cookie": true, "Proxy-Authorization": true,
	"Idempotency-Key": true, "Host": true, "Content-Length": true, "Content-Type": true,
	"Connection": true, "Transfer-Encoding": true, "Te": true, "Upgrade": true,
	"Keep-Alive": true, "Trailer": true, "Proxy-Connection": true,
}

// ParseCatalog parses and validates a catalog document:
//
//	{"tools": [{
//	  "name": "search",                      // required, [A-Za-z0-9_.-]{1,64}, unique
//	  "description": "Web search",           // required
//	  "price": "0.05", "currency": "USD",    // required; a decimal string, "0" is free, or a metered price:
//	                                         // {"max": "1.00", "per": "0.001", "usageHeader": "Toolgate-Usage"}
//	  "upstream": {"url": "https://...", "method": "POST", "headers": {"X-Api-Version": "2"}},
//	  "timeout": "10s",                      // optional Go duration, default 30s
//	  "lease": "10s",                        // optional, default 10s
//	  "ttl": "24h",                          // optional replay window, default 24h, > lease
//	  "forwardHeaders": ["Accept-Language"], // optional caller headers sent upstream
//	  "inputSchema": {"type": "object"},     // optional JSON Schema, enforced
//	  "free": {"calls": 100, "per": "day"}   // optional free tier per caller: hour, day, week or month (UTC)
//	  "onPaymentFailed": "fallback",         // optional: "block" (402, the default) or "fallback"
//	  "fallback": "search-lite"              // the tool answered instead of 402 (free or cheaper)
//	}]}
//
// Unknown fields are errors. The inputSchema must be an object whose type,
// if given, is "object", written in the JSON Schema 2020-12 subset package
// jsonschema enforces: a keyword outside it is an error. It returns an error
// naming the tool and the field (or schema keyword) that is wrong.
func ParseCatalog(doc []byte) (*Catalog, error) {
	var cd catalogDoc
	if err := safejson.DecodeStrict(doc, &cd); err != nil {
		return nil, fmt.Errorf("parse catalog: %w", err)
	}
	if len(cd.Tools) == 0 {
		return nil, errors.New("parse catalog: \"tools\" must list at least one tool")
	}
	c := &Catalog{byName: make(map[string]int, len(cd.Tools))}
	for i, raw := range cd.Tools {
		t, err := parseTool(raw)
		if err != nil {
			if t.Name != "" {
				return nil, fmt.Errorf("parse catalog: tools[%d] (%q): %w", i, t.Name, err)
			}
			return nil, fmt.Errorf("parse catalog: tools[%d]: %w", i, err)
		}
		if _, dup := c.byName[t.Name]; dup {
			return nil, fmt.Errorf("parse catalog: tools[%d]: duplicate tool name %q", i, t.Name)
		}
		c.byName[t.Name] = len(c.tools)
		c.tools = append(c.tools, t)
	}
	for i, t := range c.tools {
		if t.Fallback == "" {
			continue
		}
		fb, ok := c.Tool(t.Fallback)
		switch {
		case !ok:
			return nil, fmt.Errorf("parse catalog: tools[%d] (%q): fallback %q is not a tool of the catalog", i, t.Name, t.Fallback)
		case fb.Name == t.Name:
			return nil, fmt.Errorf("parse catalog: tools[%d] (%q): fallback must be another tool", i, t.Name)
		case fb.Fallback != "":
			return nil, fmt.Errorf("parse catalog: tools[%d] (%q): fallback %q has a fallback of its own", i, t.Name, t.Fallback)
		case fb.Price > 0 && (fb.Currency != t.Currency || fb.Price > t.Price):
			return nil, fmt.Errorf("parse catalog: tools[%d] (%q): fallback %q must be free or cost no more, in %s", i, t.Name, t.Fallback, t.Currency)
		}
	}
	return c, nil
}

// parseTool validates one tool. On error the returned Tool carries the name
// when it was valid, for the message.
func parseTool(raw json.RawMessage) (Tool, error) {
	var d toolDoc
	if err := safejson.DecodeStrict(raw, &d); err != nil {
		return Tool{}, err
	}
	t := Tool{Name: d.Name}
	if !ValidName(d.Name, "_.-") {
		return Tool{}, fmt.Errorf("name %q must be 1-64 characters of A-Z a-z 0-9 _ . -", d.Name)
	}
	if strings.TrimSpace(d.Description) == "" {
		return t, errors.New("description is required")
	}
	t.Description = d.Description
	if d.Currency == "" {
		return t, errors.New("currency is required")
	}
	if _, err := store.Decimals(d.Currency); err != nil {
		return t, fmt.Errorf("currency %q is not supported", d.Currency)
	}
	t.Currency = d.Currency
	var err error
	switch {
	case len(d.Price) == 0 || string(d.Price) == "null":
		return t, errors.New("price is required (a decimal string such as \"0.05\"; \"0\" for a free tool; or a metered price {\"max\", \"per\"})")
	case d.Price[0] == '{':
		var md meteredDoc
		if err := safejson.DecodeStrict(d.Price, &md); err != nil {
			return t, fmt.Errorf("price: %w", err)
		}
		if t.Price, t.Metered, err = parseMetered(md, d.Currency); err != nil {
			return t, err
		}
	default:
		var ps string
		if err := json.Unmarshal(d.Price, &ps); err != nil {
			return t, errors.New("price must be a decimal string such as \"0.05\" or a metered price {\"max\", \"per\"}")
		}
		if t.Price, err = store.ParseAmount(ps, d.Currency); err != nil {
			return t, fmt.Errorf("price: %w", err)
		}
	}
	if d.Upstream == nil {
		return t, errors.New("upstream is required")
	}
	u, err := url.Parse(d.Upstream.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return t, fmt.Errorf("upstream.url %q must be an absolute http or https URL", d.Upstream.URL)
	}
	t.URL = d.Upstream.URL
	switch m := strings.ToUpper(d.Upstream.Method); m {
	case "":
		t.Method = http.MethodPost
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		t.Method = m
	default:
		return t, fmt.Errorf("upstream.method %q must be POST, PUT or PATCH (the input is sent as the body)", d.Upstream.Method)
	}
	for name, v := range d.Upstream.Headers {
		if err := checkHeaderName(name); err != nil {
			return t, fmt.Errorf("upstream.headers: %w", err)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return t, fmt.Errorf("upstream.headers: value of %q holds a control character", name)
		}
		if t.Headers == nil {
			t.Headers = map[string]string{}
		}
		t.Headers[http.CanonicalHeaderKey(name)] = v
	}
	for _, name := range d.ForwardHeaders {
		if err := checkHeaderName(name); err != nil {
			return t, fmt.Errorf("forwardHeaders: %w", err)
		}
		t.ForwardHeaders = append(t.ForwardHeaders, http.CanonicalHeaderKey(name))
	}
	if t.Timeout, err = durationOr(d.Timeout, DefaultToolTimeout, "timeout"); err != nil {
		return t, err
	}
	if t.Lease, err = durationOr(d.Lease, DefaultToolLease, "lease"); err != nil {
		return t, err
	}
	if t.TTL, err = durationOr(d.TTL, store.DefaultTTL, "ttl"); err != nil {
		return t, err
	}
	if t.TTL <= t.Timeout+t.Lease {
		// A call may run for its timeout plus a lease before anyone takes it
		// over; the record must outlive that, or duplicates would find it
		// expired and execute (and charge) again.
		return t, fmt.Errorf("ttl %s must be longer than timeout %s plus lease %s", t.TTL, t.Timeout, t.Lease)
	}
	t.InputSchema = json.RawMessage(`{"type":"object"}`)
	if len(d.InputSchema) > 0 && string(d.InputSchema) != "null" {
		var schema map[string]any
		if err := json.Unmarshal(d.InputSchema, &schema); err != nil {
			return t, errors.New("inputSchema must be a JSON object")
		}
		if typ, ok := schema["type"]; ok && typ != "object" {
			return t, fmt.Errorf("inputSchema.type must be \"object\", got %v", typ)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, d.InputSchema); err != nil {
			return t, fmt.Errorf("inputSchema: %w", err)
		}
		t.InputSchema = buf.Bytes()
		if t.Schema, err = jsonschema.Compile(t.InputSchema); err != nil {
			return t, fmt.Errorf("inputSchema: %w", err)
		}
	}
	if d.Free != nil {
		n, err := strconv.ParseInt(string(d.Free.Calls), 10, 64)
		if err != nil || n <= 0 || n > 1_000_000_000 {
			return t, fmt.Errorf("free.calls %s must be a whole number of calls from 1 to 10^9", cmp.Or(string(d.Free.Calls), "(missing)"))
		}
		if !store.Period(d.Free.Per).Valid() {
			return t, fmt.Errorf("free.per %q must be \"hour\", \"day\", \"week\" or \"month\"", d.Free.Per)
		}
		t.Free = &Free{Calls: n, Per: store.Period(d.Free.Per)}
	}
	if d.X402 != nil && t.Metered != nil {
		// x402's "exact" scheme pays a fixed amount before the call.
		return t, errors.New("x402 cannot sell a metered price: its exact payment is fixed before the call")
	}
	if d.X402 != nil {
		x, err := parseX402(*d.X402, t)
		if err != nil {
			return t, fmt.Errorf("x402.%w", err)
		}
		t.X402 = x
	}
	switch d.OnPaymentFailed {
	case "", "block":
		if d.Fallback != "" {
			return t, errors.New(`fallback needs "onPaymentFailed": "fallback"`)
		}
	case "fallback":
		if d.Fallback == "" {
			return t, errors.New(`"onPaymentFailed": "fallback" needs "fallback": the name of another tool`)
		}
		t.Fallback = d.Fallback
	default:
		return t, fmt.Errorf("onPaymentFailed %q must be \"block\" or \"fallback\"", d.OnPaymentFailed)
	}
	return t, nil
}

// parseX402 validates a tool's x402 price; errors name the field.
func parseX402(d x402Doc, t Tool) (*X402, error) {
	chain, ok := strings.CutPrefix(d.Network, "eip155:")
	if !ok || chain == "" || !ValidName(chain, "") || strings.Trim(chain, "0123456789") != "" {
		return nil, fmt.Errorf("network %q must be an EVM network in CAIP-2 form, such as \"eip155:8453\"", d.Network)
	}
	if !isAddress(d.Asset) {
		return nil, fmt.Errorf("asset %q must be a token contract address (0x and 40 hex digits)", d.Asset)
	}
	if !isAddress(d.PayTo) {
		return nil, fmt.Errorf("payTo %q must be an address (0x and 40 hex digits)", d.PayTo)
	}
	x := &X402{Network: d.Network, Asset: d.Asset, PayTo: d.PayTo, Currency: "USDC", MaxTimeoutSeconds: d.MaxTimeoutSeconds}
	switch {
	case d.Amount != "":
		n, err := strconv.ParseInt(d.Amount, 10, 64)
		if err != nil || n <= 0 || n > store.MaxAmount {
			return nil, fmt.Errorf("amount %q must be a whole number of atomic units from 1 to 2^53-1", d.Amount)
		}
		x.Amount = n
	case t.Currency == "USDC" && t.Price > 0:
		x.Amount = t.Price
	case t.Currency == "USD" && t.Price > 0 && t.Price <= store.MaxAmount/10000:
		x.Amount = t.Price * 10000
	default:
		return nil, fmt.Errorf("amount is required: the price %s %s has no x402 equivalent", t.PriceString(), t.Currency)
	}
	switch {
	case x.MaxTimeoutSeconds == 0:
		x.MaxTimeoutSeconds = 60
	case x.MaxTimeoutSeconds < 0 || x.MaxTimeoutSeconds > 3600:
		return nil, fmt.Errorf("maxTimeoutSeconds %d must be 1 to 3600", x.MaxTimeoutSeconds)
	}
	if len(d.Extra) > 0 && string(d.Extra) != "null" {
		var extra map[string]any
		if err := json.Unmarshal(d.Extra, &extra); err != nil {
			return nil, errors.New("extra must be a JSON object, such as {\"name\": \"USDC\", \"version\": \"2\"}")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, d.Extra); err != nil {
			return nil, fmt.Errorf("extra: %w", err)
		}
		x.Extra = buf.Bytes()
	}
	return x, nil
}

// isAddress reports whether s is 0x and 40 hex digits.
func isAddress(s string) bool {
	if len(s) != 42 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
		return false
	}
	return strings.Trim(s[2:], "0123456789abcdefABCDEF") == ""
}

func checkHeaderName(name string) error {
	if !validHeaderName(name) {
		return fmt.Errorf("%q is not a valid header name", name)
	}
	if unforwardable[http.CanonicalHeaderKey(name)] {
		return fmt.Errorf("header %q cannot be set or forwarded by a tool", name)
	}
	return nil
}

func durationOr(s string, def time.Duration, field string) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q must be a positive duration such as \"10s\"", field, s)
	}
	return d, nil
}
