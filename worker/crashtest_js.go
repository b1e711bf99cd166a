//go:build js && wasm && crashtest

package main

import "net/http"

// The test build (-tags crashtest) can kill its own Go runtime, so that the
// E2E tests can check what callers get when the runtime dies.
func init() {
	extraRoutes = append(extraRoutes, func(mux *http.ServeMux) {
		mux.HandleFunc("POST /_test/crash", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(recurse(1 << 30))
		})
	})
}

// recurse calls itself n deep: V8's stack overflows long before 1<<30,
// a wasm trap that no recover catches.
//
//go:noinline
func recurse(n int) int {
	if n == 0 {
		return 0
	}
	return recurse(n-1) + 1
}
