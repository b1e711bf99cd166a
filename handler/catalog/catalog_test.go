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
		"free calls zero":     {tool(`, "free": {"calls": 0, "per": "day"}`), `tools[0] ("t"): free.calls 0 must be a whole number`},
		"free calls fraction": {tool(`, "free": {"calls": 1.5, "per": "day"}`), `tools[0] ("t"): free.calls 1.5 must be a whole number`},
		"free calls missing":  {tool(`, "free": {"per": "day"}`), `tools[0] ("t"): free.calls (missing) must be a whole number`},
		"free calls string":   {tool(`, "free": {"calls": "ten", "per": "day"}`), `tools[0] ("t"): free.calls "ten" must be a whole number`},
		"free bad per":        {tool(`, "free": {"calls": 10, "per": "year"}`), `tools[0] ("t"): free.per "year" must be "hour", "day", "week" or "month"`},
		"free unknown field":  {tool(`, "free": {"calls": 10, "per": "day", "reset": "daily"}`), `tools[0]: json: unknown field "reset"`},
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
