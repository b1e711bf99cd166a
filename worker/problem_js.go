//go:build js && wasm

package main

import "encoding/json"

// problemJSON renders a 500 RFC 9457 problem for errors that happen before
// the handler exists (bad configuration).
func problemJSON(detail string) []byte {
	b, _ := json.Marshal(map[string]any{
		"type":   "https://toolgate.dev/problems/misconfigured",
		"title":  "Worker misconfigured",
		"status": 500,
		"detail": detail,
	})
	return b
}
