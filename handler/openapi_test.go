//go:build !js

package handler

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/problem"
)

// TestOpenAPIDescribesEveryRoute checks that openapi.json is OpenAPI 3.1 and
// that its paths and methods are exactly the routes the handler serves.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	t.Parallel()
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(OpenAPI(), &doc))
	require.Equal(t, "3.1.0", doc.OpenAPI)

	var inCode, inDoc []string
	for _, rt := range (&server{}).routes() {
		inCode = append(inCode, rt.method+" "+rt.path)
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			inDoc = append(inDoc, strings.ToUpper(method)+" "+path)
		}
	}
	sort.Strings(inCode)
	sort.Strings(inDoc)
	require.Equal(t, inCode, inDoc)

	// Every problem type the code can produce is listed.
	for _, slug := range []string{"invalid-idempotency-key", "invalid-json", "invalid-input", "unauthorized", "insufficient-funds",
		"unknown-tool", "method-not-allowed", "in-progress", "body-too-large", "idempotency-key-mismatch",
		"upstream-rejected", "upstream-failed", "upstream-timeout", "store-unavailable", "internal",
		"topups-disabled", "topup-not-found", "invalid-topup", "invalid-webhook", "payment-provider-unavailable",
		"payment-provider-rejected", "payment-required", "payment-reused", "per-call-unavailable",
		"unknown-caller", "key-not-found", "key-revoked", "cap-not-found", "too-many-keys", "quota-exhausted"} {
		require.Contains(t, string(OpenAPI()), problem.TypeBase+slug)
	}
	// Every $ref resolves.
	var all map[string]any
	require.NoError(t, json.Unmarshal(OpenAPI(), &all))
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				require.True(t, resolves(all, ref), "unresolved %s", ref)
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(all)
}

func resolves(doc map[string]any, ref string) bool {
	var cur any = doc
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}
