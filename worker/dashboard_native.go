//go:build !js

package main

import "github.com/toolgate/toolgate-go/worker/dashboard"

// The native twin serves the dashboard's files itself; the Worker leaves them to Workers static assets
// (wrangler.toml [assets]), so the wasm does not embed them.
func init() { serveDashboard = dashboard.Wrap }
