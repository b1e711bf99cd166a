//go:build !js

package stripe

import "net/http"

// defaultSend is the transport when Client.SendFunc is nil.
var defaultSend = http.DefaultClient.Do
