package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// DefaultStatsRetention is how long usage counters are kept when STATS_RETENTION_DAYS is empty.
const DefaultStatsRetention = 90 * 24 * time.Hour

// background runs work after a response (the Worker's waitUntil, set by main_js.go); nil lets the
// engine start a goroutine (native).
var background func(ctx context.Context, fn func(context.Context))

// serveDashboard, when set (natively: dashboard_native.go), wraps the handler to serve the dashboard's
// files; the Worker leaves them to Workers static assets.
var serveDashboard func(http.Handler) http.Handler

// sweepUsage deletes usage counters older than retention, in batches of batch, at most maxBatches, so
// one cron invocation stays bounded (the rest goes at the next).
func sweepUsage(ctx context.Context, st store.Stats, now time.Time, retention time.Duration, batch, maxBatches int) (int, error) {
	if batch <= 0 {
		batch = 500
	}
	if retention <= 0 {
		retention = DefaultStatsRetention
	}
	total := 0
	for i := 0; i < maxBatches; i++ {
		n, err := st.SweepUsage(ctx, now.Add(-retention), batch)
		total += n
		if err != nil {
			return total, fmt.Errorf("sweep usage: %w", err)
		}
		if n < batch {
			break
		}
	}
	return total, nil
}
