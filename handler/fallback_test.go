//go:build !js

package handler_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/store"
)

// withFallbackCatalog sells "premium" (0.50 USD) with the free tool "lite"
// as its fallback when a caller can't pay.
func withFallbackCatalog(t *testing.T, base *string) option {
	return func(c *handler.Config) {
		doc := fmt.Sprintf(`{"tools": [
		 {"name": "premium", "description": "paid", "price": "0.50", "currency": "USD", "upstream": {"url": "%[1]s/ok"},
		  "onPaymentFailed": "fallback", "fallback": "lite"},
		 {"name": "lite", "description": "free", "price": "0", "currency": "USD", "upstream": {"url": "%[1]s/text"}}
		]}`, *base)
		cat, err := catalog.ParseCatalog([]byte(doc))
		require.NoError(t, err)
		c.Catalog = cat
	}
}

// TestFallbackWhenPaymentFails: a caller who can't pay for "premium" gets
// the free "lite" answer instead of 402, marked in the receipt, the header
// and the trace; nothing is charged; the same key replays it; after a
// credit the same key runs "premium" itself, charged once.
func TestFallbackWhenPaymentFails(t *testing.T) {
	t.Parallel()
	base := ""
	e := setup(t, func(c *handler.Config) { base = c.Catalog.Tools()[0].URL[:len(c.Catalog.Tools()[0].URL)-len("/ok")] },
		withFallbackCatalog(t, &base))
	c := e.newCaller("agent", "0.10")

	r := e.call(c.key, "premium", "k-1", `{"q":1}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "premium", r.header.Get("Toolgate-Fallback-For"))
	rc := r.json(t)["receipt"].(map[string]any)
	require.Equal(t, "lite", rc["tool"])
	require.Equal(t, "premium", rc["fallbackFor"])
	require.Equal(t, "0.00", rc["amount"])
	require.Equal(t, int64(1), e.up.count("/text"))
	require.Equal(t, int64(0), e.up.count("/ok"))
	require.Equal(t, int64(10), e.balance(c), "nothing charged")

	again := e.call(c.key, "premium", "k-1", `{"q":1}`)
	require.Equal(t, http.StatusOK, again.status)
	require.Equal(t, string(r.body), string(again.body))
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, int64(1), e.up.count("/text"))

	// The trace shows both: premium failed for money, lite answered.
	tr := e.do(http.MethodGet, "/v1/calls/k-1", c.key, nil, "")
	require.Equal(t, http.StatusOK, tr.status, string(tr.body))
	require.Contains(t, string(tr.body), `"premium"`)
	require.Contains(t, string(tr.body), `"lite"`)

	e.credit(c, "1.00", "topup-1")
	paid := e.call(c.key, "premium", "k-1", `{"q":1}`)
	require.Equal(t, http.StatusOK, paid.status, string(paid.body))
	require.Empty(t, paid.header.Get("Toolgate-Fallback-For"))
	require.Equal(t, "premium", paid.json(t)["receipt"].(map[string]any)["tool"])
	require.Equal(t, int64(1), e.up.count("/ok"))
	require.Equal(t, int64(60), e.balance(c))
	require.Equal(t, []string{store.EntryCredit, store.EntryCredit, store.EntryCharge}, e.kinds(c))
	e.checkInvariants()
}

func TestFallbackCatalogErrors(t *testing.T) {
	t.Parallel()
	tool := func(name, price, extra string) string {
		return fmt.Sprintf(`{"name": %q, "description": "d", "price": %q, "currency": "USD", "upstream": {"url": "https://x.test/"}%s}`, name, price, extra)
	}
	for name, c := range map[string]struct{ doc, want string }{
		"unknown":   {tool("a", "1", `, "onPaymentFailed": "fallback", "fallback": "nope"`), `fallback "nope" is not a tool`},
		"self":      {tool("a", "1", `, "onPaymentFailed": "fallback", "fallback": "a"`), "another tool"},
		"pricier":   {tool("a", "1", `, "onPaymentFailed": "fallback", "fallback": "b"`) + "," + tool("b", "2", ""), "cost no more"},
		"chain":     {tool("a", "1", `, "onPaymentFailed": "fallback", "fallback": "b"`) + "," + tool("b", "0", `, "onPaymentFailed": "fallback", "fallback": "c"`) + "," + tool("c", "0", ""), "a fallback of its own"},
		"no target": {tool("a", "1", `, "onPaymentFailed": "fallback"`), `needs "fallback"`},
		"no mode":   {tool("a", "1", `, "fallback": "b"`) + "," + tool("b", "0", ""), `needs "onPaymentFailed"`},
		"bad mode":  {tool("a", "1", `, "onPaymentFailed": "retry"`), `must be "block" or "fallback"`},
	} {
		_, err := catalog.ParseCatalog([]byte(`{"tools": [` + c.doc + `]}`))
		require.ErrorContains(t, err, c.want, name)
	}
}
