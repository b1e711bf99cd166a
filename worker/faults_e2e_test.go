//go:build !js

package main

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store/storetest"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// TestE2ED1FaultStorms runs the store's fault storms against D1 inside
// workerd, through the bridge's D1 client wrapped in a fault injector.
func TestE2ED1FaultStorms(t *testing.T) {
	t.Parallel()
	dir := edgetest.BuildVariant(t, "conformance")
	edge := edgetest.Start(t, edgetest.Options{
		BuildDir: dir,
		Vars:     map[string]string{"TOOLS": newUpstream(t).tools()},
	})
	res, body := client{t: t, base: edge.URL("w0")}.do(http.MethodPost, "/_test/d1-faults", nil, nil)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	require.Equal(t, "true", res.Header.Get("Toolgate-D1-Batch"), "the bridge's client batches, so the storms fault whole batches")
	var results []storetest.FaultResult
	require.NoError(t, json.Unmarshal(body, &results))
	require.Len(t, results, len(storetest.FaultCases))
	for _, r := range results {
		require.True(t, r.Passed, "D1 %s: %s", r.Name, r.Failure)
		require.Positive(t, r.Faults.Errors(), "D1 %s: faults were injected", r.Name)
		t.Logf("D1 %s: faults: %s", r.Name, r.Faults)
	}
}
