//go:build js

package x402

import "net/http"

// defaultSend is nil in js/wasm: Facilitator.SendFunc is required there, so
// that Go's js/wasm net/http client is never linked into the worker.
var defaultSend func(*http.Request) (*http.Response, error)
