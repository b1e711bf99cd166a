//go:build !js

package stripe

import "net/http"

// defaultSend is the transport when Client.Send is nil.
var defaultSend = http.DefaultClient.Do
