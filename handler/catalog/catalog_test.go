//go:build !js

package catalog_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/jsonschema"
	"github.com/toolgate/toolgate-go/store"
)

const exampleCatalog = `{"tools": [{
  "name": "search",
  "description": "Web search",
  "price": "0.05",
  "currency": "USD",
  "upstream": {"url": "https://api.example.com/search", "method": "post", "headers": {"x-api-version": "2"}},
  "timeout": "10s",
  "lease": "20s",
  "ttl": "1h",
  "forwardHeaders": ["accept-language"],
  "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
}, {
  "name": "ping", "description": "Free ping", "price": "0", "currency": "CREDIT",
  "upstream": {"url": "http://127.0.0.1:9000/ping"}, "free": {"calls": 100, "per": "week"}
}]}`

func TestParseCatalog(t *testing.T) {
	t.Parallel()
	c, err := catalog.ParseCatalog([]byte(exampleCatalog))
	require.NoError(t, err)
	require.Len(t, c.Tools(), 2)
	s, ok := c.Tool("search")
	require.True(t, ok)
	require.EqualValues(t, 5, s.Price)
	require.Equal(t, "0.05", s.PriceString())
	require.Equal(t, http.MethodPost, s.Method)
	require.Equal(t, 10*time.Second, s.Timeout)
	require.Equal(t, 20*time.Second, s.Lease)
	require.Equal(t, time.Hour, s.TTL)
	require.Equal(t, map[string]string{"X-Api-Version": "2"}, s.Headers)
	require.Equal(t, []string{"Accept-Language"}, s.ForwardHeaders)
	require.JSONEq(t, `{"type":"object","properties":{"q":{"type":"string"}},"required":["q"]}`, string(s.InputSchema))
	require.NotNil(t, s.Schema, "the inputSchema is compiled")
	vs, _ := s.Schema.Validate(map[string]any{"q": 1})
	require.Equal(t, []jsonschema.Violation{{Path: "/q", Keyword: "type", Message: "must be string, not number"}}, vs)

	p, ok := c.Tool("ping")
	require.True(t, ok)
	require.EqualValues(t, 0, p.Price)
	require.Equal(t, catalog.DefaultToolTimeout, p.Timeout)
	require.Equal(t, catalog.DefaultToolLease, p.Lease)
	require.Equal(t, store.DefaultTTL, p.TTL)
	require.JSONEq(t, `{"type":"object"}`, string(p.InputSchema))
	require.Nil(t, p.Schema, "no inputSchema in the document: any input")
	require.Equal(t, &catalog.Free{Calls: 100, Per: store.PeriodWeek}, p.Free)
	require.Nil(t, s.Free)
	require.Equal(t, []string{"CREDIT", "USD"}, c.Currencies())
	_, ok = c.Tool("nope")
	require.False(t, ok)
}

func TestParseCatalogRejectsInvalidDocuments(t *testing.T) {
	t.Parallel()
	tool := func(fields string) string {
		return `{"tools": [{"name": "t", "description": "d", "price": "1.00", "currency": "USD",
			"upstream": {"url": "https://x.test/a"}` + fields + `}]}`
	}
	metered := func(price string) string {
		return `{"tools": [{"name": "t", "description": "d", "price": ` + price + `, "currency": "USD",
			"upstream": {"url": "https://x.test/a"}}]}`
	}
	cases := map[string]struct{ doc, want string }{
		"not JSON":                     {`{"tools": [`, "parse catalog: unexpected EOF"},
		"trailing data":                {`{"tools": []} x`, "unexpected data after the JSON value"},
		"no tools":                     {`{"tools": []}`, `"tools" must list at least one tool`},
		"unknown top field":            {`{"tool": []}`, `unknown field "tool"`},
		"unknown field":                {tool(`, "prise": "1"`), `tools[0]: json: unknown field "prise"`},
		"bad name":                     {`{"tools": [{"name": "a b"}]}`, `tools[0]: name "a b" must be 1-64 characters`},
		"no description":               {`{"tools": [{"name": "t"}]}`, `tools[0] ("t"): description is required`},
		"no currency":                  {`{"tools": [{"name": "t", "description": "d", "price": "1"}]}`, "currency is required"},
		"unknown currency":             {`{"tools": [{"name": "t", "description": "d", "price": "1", "currency": "XYZ"}]}`, `currency "XYZ" is not supported`},
		"no price":                     {`{"tools": [{"name": "t", "description": "d", "currency": "USD"}]}`, "price is required"},
		"price decimals":               {`{"tools": [{"name": "t", "description": "d", "price": "0.001", "currency": "USD"}]}`, "price: store: invalid amount"},
		"negative price":               {`{"tools": [{"name": "t", "description": "d", "price": "-1", "currency": "USD"}]}`, "price: store: invalid amount"},
		"no upstream":                  {`{"tools": [{"name": "t", "description": "d", "price": "1", "currency": "USD"}]}`, "upstream is required"},
		"relative url":                 {`{"tools": [{"name": "t", "description": "d", "price": "1", "currency": "USD", "upstream": {"url": "/x"}}]}`, `upstream.url "/x" must be an absolute http or https URL`},
		"ftp url":                      {`{"tools": [{"name": "t", "description": "d", "price": "1", "currency": "USD", "upstream": {"url": "ftp://x/y"}}]}`, "must be an absolute http or https URL"},
		"GET method":                   {`{"tools": [{"name": "t", "description": "d", "price": "1", "currency": "USD", "upstream": {"url": "https://x.test", "method": "GET"}}]}`, `upstream.method "GET" must be POST, PUT or PATCH`},
		"bad timeout":                  {tool(`, "timeout": "soon"`), `timeout "soon" must be a positive duration`},
		"zero lease":                   {tool(`, "lease": "0s"`), `lease "0s" must be a positive duration`},
		"ttl under timeout plus lease": {tool(`, "timeout": "50s", "lease": "15s", "ttl": "1m"`), "ttl 1m0s must be longer than timeout 50s plus lease 15s"},
		"ttl under lease":              {tool(`, "lease": "2h", "ttl": "1h"`), "ttl 1h0m0s must be longer than timeout 30s plus lease 2h0m0s"},
		"forward auth":                 {tool(`, "forwardHeaders": ["Authorization"]`), `forwardHeaders: header "Authorization" cannot be set or forwarded`},
		"bad header name":              {tool(`, "forwardHeaders": ["a b"]`), `forwardHeaders: "a b" is not a valid header name`},
		"set idem key":                 {`{"tools": [{"name": "t", "description": "d", "price": "1", "currency": "USD", "upstream": {"url": "https://x.test", "headers": {"idempotency-key": "x"}}}]}`, `upstream.headers: header "idempotency-key" cannot be set`},
		"schema not object":            {tool(`, "inputSchema": [1]`), "inputSchema must be a JSON object"},
		"schema type":                  {tool(`, "inputSchema": {"type": "string"}`), `inputSchema.type must be "object"`},
		"schema unknown keyword": {tool(`, "inputSchema": {"type": "object", "properties": {"q": {"type": "string", "contentEncoding": "base64"}}}`),
			`tools[0] ("t"): inputSchema: keyword "contentEncoding" at /properties/q: is not supported`},
		"schema draft-07 definitions": {tool(`, "inputSchema": {"type": "object", "definitions": {}}`),
			`tools[0] ("t"): inputSchema: keyword "definitions": is not supported`},
		"schema bad pattern": {tool(`, "inputSchema": {"type": "object", "properties": {"q": {"pattern": "(?<=a)b"}}}`),
			`tools[0] ("t"): inputSchema: keyword "pattern" at /properties/q: "(?<=a)b" is not a Go (RE2) regular expression`},
		"schema dangling ref": {tool(`, "inputSchema": {"type": "object", "properties": {"q": {"$ref": "#/$defs/q"}}}`),
			`tools[0] ("t"): inputSchema: keyword "$ref" at /properties/q: "#/$defs/q" does not point to a schema`},
		"free calls zero":      {tool(`, "free": {"calls": 0, "per": "day"}`), `tools[0] ("t"): free.calls 0 must be a whole number`},
		"free calls fraction":  {tool(`, "free": {"calls": 1.5, "per": "day"}`), `tools[0] ("t"): free.calls 1.5 must be a whole number`},
		"free calls missing":   {tool(`, "free": {"per": "day"}`), `tools[0] ("t"): free.calls (missing) must be a whole number`},
		"free calls string":    {tool(`, "free": {"calls": "ten", "per": "day"}`), `tools[0] ("t"): free.calls "ten" must be a whole number`},
		"free bad per":         {tool(`, "free": {"calls": 10, "per": "year"}`), `tools[0] ("t"): free.per "year" must be "hour", "day", "week" or "month"`},
		"free unknown field":   {tool(`, "free": {"calls": 10, "per": "day", "reset": "daily"}`), `tools[0]: json: unknown field "reset"`},
		"metered no max":       {metered(`{"per": "0.001"}`), `tools[0] ("t"): price.max is required for a metered price`},
		"metered zero max":     {metered(`{"max": "0", "per": "0.001"}`), `tools[0] ("t"): price.max must be above 0`},
		"metered max decimals": {metered(`{"max": "1.001", "per": "0.001"}`), `tools[0] ("t"): price.max: store: invalid amount`},
		"metered no per":       {metered(`{"max": "1.00"}`), `tools[0] ("t"): price.per "" must be a positive plain decimal`},
		"metered zero per":     {metered(`{"max": "1.00", "per": "0.000"}`), `price.per "0.000" must be a positive plain decimal`},
		"metered negative per": {metered(`{"max": "1.00", "per": "-1"}`), `price.per "-1" must be a positive plain decimal`},
		"metered exponent per": {metered(`{"max": "1.00", "per": "1e-3"}`), `price.per "1e-3" must be a positive plain decimal`},
		"metered per over max": {metered(`{"max": "1.00", "per": "1.5"}`), `price.per 1.5 is above price.max 1.00`},
		"metered bad header":   {metered(`{"max": "1.00", "per": "0.01", "usageHeader": "a b"}`), `price.usageHeader: "a b" is not a valid header name`},
		"metered unknown":      {metered(`{"max": "1.00", "per": "0.01", "unit": "token"}`), `tools[0] ("t"): price: json: unknown field "unit"`},
		"price number":         {`{"tools": [{"name": "t", "description": "d", "price": 1, "currency": "USD"}]}`, `price must be a decimal string such as "0.05" or a metered price`},
		"metered with x402": {metered(`{"max": "1.00", "per": "0.01"}, "x402": {"network": "eip155:8453", "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "payTo": "0x1111111111111111111111111111111111111111"}`),
			`x402 cannot sell a metered price`},
		"duplicate name": {`{"tools": [` +
			`{"name": "t", "description": "d", "price": "1", "currency": "USD", "upstream": {"url": "https://x.test"}},` +
			`{"name": "t", "description": "d", "price": "1", "currency": "USD", "upstream": {"url": "https://x.test"}}]}`,
			`tools[1]: duplicate tool name "t"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := catalog.ParseCatalog([]byte(tc.doc))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestMeteredCost: units times the price per unit, rounded up to the minor
// unit, at most the maximum; a missing or unusable usage header costs the
// maximum.
func TestMeteredCost(t *testing.T) {
	t.Parallel()
	c, err := catalog.ParseCatalog([]byte(`{"tools": [
		{"name": "m", "description": "d", "price": {"max": "1.00", "per": "0.001"}, "currency": "USD",
			"upstream": {"url": "https://x.test/a"}},
		{"name": "h", "description": "d", "price": {"max": "5", "per": "2", "usageHeader": "x-units"}, "currency": "JPY",
			"upstream": {"url": "https://x.test/a"}}]}`))
	require.NoError(t, err)
	m, _ := c.Tool("m")
	require.Equal(t, int64(100), m.Price)
	require.Equal(t, catalog.DefaultUsageHeader, m.Metered.UsageHeader)
	require.Equal(t, "0.001", m.Metered.Per)
	for units, want := range map[string]struct {
		amount int64
		ok     bool
	}{
		"0": {0, true}, "10": {1, true}, "11": {2, true}, "270": {27, true}, " 270 ": {27, true}, "0.5": {1, true},
		"999": {100, true}, "1000": {100, true}, "1000000": {100, true},
		"99999999999999999999999999999999999999": {100, true},
		"":                                       {100, false}, "-1": {100, false}, "1e3": {100, false}, "abc": {100, false}, "1.": {100, false},
		".5": {100, false}, "1/2": {100, false}, "0x10": {100, false}, "NaN": {100, false},
		"1, 2": {100, false},
		"123456789012345678901234567890123456789012": {100, false}, // too long
	} {
		amount, ok := m.Cost(units)
		require.Equal(t, want.amount, amount, "cost of %q", units)
		require.Equal(t, want.ok, ok, "usable %q", units)
	}
	h, _ := c.Tool("h")
	require.Equal(t, "X-Units", h.Metered.UsageHeader)
	amount, ok := h.Cost("2")
	require.Equal(t, []any{int64(4), true}, []any{amount, ok})
	amount, _ = h.Cost("3")
	require.Equal(t, int64(5), amount, "capped at the maximum")
}
