//go:build !js

package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/benchharness"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

func BenchmarkAB(b *testing.B) {
	up := upstream(b)
	newDir := b.TempDir()
	require.NoError(b, benchharness.BuildGo(newDir, "./worker", "-trimpath", "-ldflags=-s -w"))
	dirs := map[string]string{"old": os.Getenv("OLD_DIR"), "new": newDir}
	for round := 0; round < 2; round++ {
		for _, name := range []string{"old", "new"} {
			t := target{name: name, dir: dirs[name], mode: edgetest.ModePersistent}
			edge, base, key := start(b, t, up.tools)
			warm := callLoad(base, key, 8, 200, time.Minute, func(i int) string { return fmt.Sprintf("w-%d", i) })
			benchharness.Run(context.Background(), warm)
			before := procOrZero(edge)
			l := callLoad(base, key, 8, 1500, time.Minute, func(i int) string { return fmt.Sprintf("y-%d", i) })
			res := benchharness.Run(context.Background(), l)
			after := procOrZero(edge)
			fmt.Printf("%s ok=%d fail=%d rps=%.1f cpu/call=%.2fms first=%v\n", name, res.Requests-res.Failures, res.Failures, res.RPS(),
				float64((after.CPU-before.CPU).Microseconds())/1000/float64(res.Requests-res.Failures), res.FirstErr)
			edge.Close()
		}
	}
}
