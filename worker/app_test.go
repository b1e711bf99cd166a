//go:build !js

package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHandlerNative(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		path       string
		wantStatus int
	}{
		"healthz":                    {"/healthz", http.StatusOK},
		"d1 smoke needs a database":  {"/_smoke/d1", http.StatusNotFound},
		"fetch smoke needs a client": {"/_smoke/fetch?url=http://127.0.0.1/", http.StatusNotFound},
	}
	h := newHandler(deps{})
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			require.Equal(t, tc.wantStatus, rec.Code, rec.Body.String())
		})
	}
}

func TestRecoverPanics(t *testing.T) {
	t.Parallel()
	h := recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	require.JSONEq(t, `{"error":"internal error"}`, rec.Body.String())
}

func TestSmokeFetchRejectsNonLoopback(t *testing.T) {
	t.Parallel()
	calls := 0
	h := newHandler(deps{FetchFunc: func(*http.Request) (*http.Response, error) { calls++; return nil, nil }})
	for _, u := range []string{"http://example.com/", "file:///etc/passwd", "http://10.0.0.1/", "::"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/_smoke/fetch?url="+u, nil))
		require.Equal(t, http.StatusBadRequest, rec.Code, u)
	}
	require.Zero(t, calls)
}
