//go:build js

package hranatest

// The server is native-only (it embeds SQLite); this file keeps the package
// non-empty under js/wasm so `GOOS=js go vet ./...` stays quiet.
