//go:build !js

package handler_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/toolgate/toolgate-go"

// deps lists the project packages that pkg imports, directly or not.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"/"+pkg).Output()
	require.NoError(t, err, pkg)
	var own []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, module+"/") && p != module+"/"+pkg {
			own = append(own, strings.TrimPrefix(p, module+"/"))
		}
	}
	return own
}

// TestLayout checks the package rules that make "where does money move?"
// a one-package answer, from the import graph (`go list -deps`):
//   - store imports nothing of the project; its backends import only store;
//   - catalog and safejson are leaves above store;
//   - the engine imports no surface (handler, mcp) and not problem;
//   - problem imports no surface; mcp does not import the REST surface;
//   - the payment seam (handler/pay) imports nothing of the project, and a
//     rail (handler/pay/<rail>) only the seam, store and safejson: neither
//     the engine nor a surface nor another rail. It speaks its provider's
//     wire format; the engine moves money;
//   - a rail's test server (handler/pay/x402/facilitatortest) may import
//     its rail, and no worker build (native or wasm) links it.
//
// And that the surfaces cannot write to the store: the store is an
// unexported field of the engine, and the surfaces' only use of a
// store.Store is handing Config.Store to the engine.
func TestLayout(t *testing.T) {
	t.Parallel()
	allowed := map[string][]string{
		"store":              {},
		"store/sqlstore":     {"store"},
		"store/memory":       {"store"},
		"handler/safejson":   {},
		"handler/catalog":    {"store", "handler/safejson"},
		"handler/pay":        {},
		"handler/engine":     {"store", "handler/catalog", "handler/safejson", "handler/pay"},
		"handler/problem":    {"store", "handler/catalog", "handler/safejson", "handler/pay", "handler/engine"},
		"handler/mcp":        {"store", "handler/catalog", "handler/safejson", "handler/pay", "handler/engine", "handler/problem"},
		"handler/pay/stripe": {"store", "handler/safejson", "handler/pay"},
		"handler/pay/x402":   {"store", "handler/safejson", "handler/pay"},
		// A rail's test server may import its rail; nothing but tests may
		// import it (below).
		"handler/pay/x402/facilitatortest": {"store", "handler/safejson", "handler/pay", "handler/pay/x402"},
	}
	for pkg, ok := range allowed {
		for _, d := range deps(t, pkg) {
			require.Contains(t, ok, d, "%s must not import %s", pkg, d)
		}
	}

	// Test servers are test-only: neither the wasm nor the native worker
	// links them.
	for _, env := range [][]string{nil, {"GOOS=js", "GOARCH=wasm"}} {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"/worker")
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.Output()
		require.NoError(t, err, "go list -deps ./worker %v", env)
		for _, p := range strings.Fields(string(out)) {
			require.NotEqual(t, module+"/handler/pay/x402/facilitatortest", p, "the worker %v must not link a test server", env)
		}
	}

	for dir, want := range map[string]int{".": 1, "mcp": 0} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		n := 0
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			n += strings.Count(string(b), "store.Store")
		}
		require.Equal(t, want, n, "uses of store.Store in the surface %s (only Config.Store, handed to the engine)", dir)
	}
}
