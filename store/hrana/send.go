//go:build !js

package hrana

import "net/http"

// defaultSend is the transport when Options.SendFunc is nil.
var defaultSend = http.DefaultClient.Do
