//go:build js

package stripe

import "net/http"

// defaultSend is nil in js/wasm: Client.Send is required there, so that
// Go's js/wasm net/http client is never linked into the worker.
var defaultSend func(*http.Request) (*http.Response, error)
