//go:build !js

package libsql_test

import "time"

var (
	storetestNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	lease        = 10 * time.Second
)
