//go:build !js

package main

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNativeDashboard: the native twin serves the same files as the Worker's static assets, at the same
// paths, and the admin API next to them.
func TestNativeDashboard(t *testing.T) {
	t.Parallel()
	srv, _ := setup(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := noRedirect.Get(srv.URL + path)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res, string(b)
	}
	res, _ := get("/dashboard")
	require.Equal(t, http.StatusTemporaryRedirect, res.StatusCode)
	require.Equal(t, "/dashboard/", res.Header.Get("Location"))
	res, body := get("/dashboard/")
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, res.Header.Get("Content-Type"), "text/html")
	require.Contains(t, body, "publisher dashboard")
	for _, f := range []string{"/dashboard/app.js", "/dashboard/app.css"} {
		res, body = get(f)
		require.Equal(t, http.StatusOK, res.StatusCode, f)
		require.NotEmpty(t, body)
	}
	res, _ = get("/dashboard/nope.js")
	require.Equal(t, http.StatusNotFound, res.StatusCode)
	// (Unclean paths keep the handler's 404 outside demo mode: TestNativeAbuse.)
	// The stats API is there too, behind the admin token (none is set here: 401).
	res, _ = get("/v1/admin/stats")
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
}
