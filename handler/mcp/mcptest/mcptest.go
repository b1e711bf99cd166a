// Package mcptest checks a toolgate MCP endpoint from the client side with
// the official Go SDK (github.com/modelcontextprotocol/go-sdk). It takes only
// a URL and a caller key, so the same check runs against an httptest server
// and against the compiled worker in workerd. It is imported by tests only;
// nothing in the gateway depends on it.
package mcptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/require"

	tgmcp "github.com/toolgate/toolgate-go/handler/mcp"
)

// T is the part of *testing.T that Exercise needs.
type T interface {
	Helper()
	Errorf(format string, args ...any)
	FailNow()
}

// Connect opens an MCP session to url as the caller whose key is apiKey,
// over the SDK's streamable HTTP transport with an Authorization header on
// every request. An empty apiKey sends no Authorization header: an
// anonymous agent, which a gateway selling per call with x402 accepts. A nil
// client means http.DefaultClient. It returns the SDK's error when the
// handshake fails; the caller closes the session.
func Connect(ctx context.Context, url, apiKey string, client *http.Client) (*mcp.ClientSession, error) {
	if client == nil {
		client = http.DefaultClient
	}
	base := client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	authed := *client
	authed.Transport = bearerTransport{key: apiKey, base: base}
	c := mcp.NewClient(&mcp.Implementation{Name: "toolgate-mcptest", Version: "1"}, nil)
	return c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &authed, MaxRetries: -1}, nil)
}

type bearerTransport struct {
	key  string
	base http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.key != "" {
		r.Header.Set("Authorization", "Bearer "+b.key)
	}
	return b.base.RoundTrip(r)
}

// Params configures Exercise.
type Params struct {
	// URL is the MCP endpoint, such as base + "/mcp". Required.
	URL string
	// APIKey is a caller key with enough balance for one call. Required.
	APIKey string
	// Tool is a paid tool whose upstream answers 2xx with a JSON object.
	// Required.
	Tool string
	// Arguments are the tool's arguments; nil means {}.
	Arguments map[string]any
	// IdempotencyKey is sent in params._meta; empty means a random key.
	IdempotencyKey string
	// HTTPClient sends the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Timeout bounds the whole exercise; zero means 30 seconds.
	Timeout time.Duration
}

// Result is what Exercise saw, for the caller to compare with its store and
// its upstream.
type Result struct {
	SessionID      string
	Tool           *mcp.Tool
	Price          string // the tool's price from tools/list _meta
	Currency       string
	IdempotencyKey string
	First          *mcp.CallToolResult // executed: replayed false
	Replay         *mcp.CallToolResult // the same key again: replayed true
	Receipt        map[string]any      // First's receipt; Replay's is identical
}

// Exercise connects the official SDK client to p.URL as p.APIKey, checks the
// initialize result, pings, lists the tools (p.Tool must be there with its
// price in the description and _meta), calls p.Tool twice with one
// idempotency key and closes the session (DELETE). It checks that the first
// call executed and the second replayed it with the same content and
// receipt. Afterwards the gateway must show exactly one upstream call and
// one charge of Result.Price; asserting that is the caller's job, since only
// it sees the store and the upstream. It fails t on any mismatch.
func Exercise(t T, p Params) Result {
	t.Helper()
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out := Result{IdempotencyKey: p.IdempotencyKey}
	if out.IdempotencyKey == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		out.IdempotencyKey = "mcptest-" + hex.EncodeToString(b[:])
	}

	cs, err := Connect(ctx, p.URL, p.APIKey, p.HTTPClient)
	require.NoError(t, err, "connect to %s", p.URL)
	init := cs.InitializeResult()
	require.Equal(t, tgmcp.ProtocolVersion, init.ProtocolVersion)
	require.NotNil(t, init.ServerInfo)
	require.Equal(t, "toolgate", init.ServerInfo.Name)
	require.NotNil(t, init.Capabilities)
	require.NotNil(t, init.Capabilities.Tools)
	out.SessionID = cs.ID()
	require.NotEmpty(t, out.SessionID, "the server issues Mcp-Session-Id")
	require.NoError(t, cs.Ping(ctx, nil))

	tools, err := cs.ListTools(ctx, nil)
	require.NoError(t, err)
	for _, tool := range tools.Tools {
		if tool.Name == p.Tool {
			out.Tool = tool
		}
	}
	require.NotNil(t, out.Tool, "tools/list has %q", p.Tool)
	require.NotNil(t, out.Tool.InputSchema)
	out.Price, _ = out.Tool.Meta[tgmcp.MetaPrice].(string)
	out.Currency, _ = out.Tool.Meta[tgmcp.MetaCurrency].(string)
	require.NotEmpty(t, out.Price, "tool _meta has the price")
	require.NotEmpty(t, out.Currency, "tool _meta has the currency")
	require.Contains(t, out.Tool.Description, out.Price+" "+out.Currency, "the description states the price")

	call := func() *mcp.CallToolResult {
		t.Helper()
		args := p.Arguments
		if args == nil {
			args = map[string]any{}
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: p.Tool, Arguments: args,
			Meta: mcp.Meta{tgmcp.MetaIdempotencyKey: out.IdempotencyKey}})
		require.NoError(t, err)
		require.False(t, res.IsError, "tool error: %s", text(res))
		require.NotEmpty(t, res.Content)
		require.NotEmpty(t, text(res))
		require.IsType(t, map[string]any{}, res.StructuredContent, "an object output is structured content")
		require.Equal(t, out.IdempotencyKey, res.Meta[tgmcp.MetaIdempotencyKey])
		return res
	}
	out.First = call()
	require.Equal(t, false, out.First.Meta[tgmcp.MetaReplayed])
	out.Receipt, _ = out.First.Meta[tgmcp.MetaReceipt].(map[string]any)
	require.NotNil(t, out.Receipt, "_meta has the receipt")
	require.NotEmpty(t, out.Receipt["callId"])
	require.Equal(t, p.Tool, out.Receipt["tool"])
	require.Equal(t, out.Price, out.Receipt["amount"])
	require.Equal(t, out.Currency, out.Receipt["currency"])
	require.Equal(t, false, out.Receipt["refunded"])

	out.Replay = call()
	require.Equal(t, true, out.Replay.Meta[tgmcp.MetaReplayed])
	require.Equal(t, out.Receipt, out.Replay.Meta[tgmcp.MetaReceipt], "a replay carries the original receipt")
	require.Equal(t, text(out.First), text(out.Replay))
	require.Equal(t, jsonOf(t, out.First.StructuredContent), jsonOf(t, out.Replay.StructuredContent))

	require.NoError(t, cs.Close())
	return out
}

// text joins a result's text content.
func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func jsonOf(t T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
