//go:build !js

package x402

import "net/http"

// defaultSend is what a Facilitator without a SendFunc sends with natively.
var defaultSend = http.DefaultClient.Do
