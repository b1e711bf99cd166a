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
//   - safejson is a leaf; jsonschema (the input validator) imports only
//     safejson; catalog imports them and store;
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
		"handler/jsonschema": {"handler/safejson"},
		"handler/catalog":    {"store", "handler/safejson", "handler/jsonschema"},
		"handler/pay":        {},
		"handler/engine":     {"store", "handler/catalog", "handler/safejson", "handler/jsonschema", "handler/pay"},
		"handler/problem":    {"store", "handler/catalog", "handler/safejson", "handler/jsonschema", "handler/pay", "handler/engine"},
		"handler/mcp": {"store", "handler/catalog", "handler/safejson", "handler/jsonschema", "handler/pay", "handler/engine",
			"handler/problem", "handler/pay/x402"},
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

// testOnly are the import paths (prefixes) that only tests may import: the
// stripe-mock harness, and stripe-go, which it uses to sign events (its
// webhook package alone would add about 0.86 MB gzip to the wasm).
var testOnly = []string{module + "/handler/pay/stripe/stripemock", "github.com/stripe/"}

func isTestOnly(p string) bool {
	for _, prefix := range testOnly {
		if p == prefix || strings.HasPrefix(p, strings.TrimSuffix(prefix, "/")+"/") {
			return true
		}
	}
	return false
}

// TestLayoutTestOnlyImports checks that no package of the module imports a
// test-only package outside its _test files (except the test-only packages
// themselves), and that neither the worker nor its wasm build depends on
// one, directly or not.
func TestLayoutTestOnlyImports(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", module+"/...").Output()
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Greater(t, len(lines), 10, "go list saw the module's packages")
	for _, line := range lines {
		f := strings.Fields(line)
		if isTestOnly(f[0]) {
			continue
		}
		for _, imp := range f[1:] {
			require.False(t, isTestOnly(imp), "%s must not import %s (test-only) outside its _test files", f[0], imp)
		}
	}

	for _, env := range [][]string{nil, {"GOOS=js", "GOARCH=wasm"}} {
		cmd := exec.Command("go", "list", "-deps", module+"/worker")
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.Output()
		require.NoError(t, err, env)
		deps := strings.Fields(string(out))
		require.Contains(t, deps, module+"/handler", "go list listed the worker's deps (%v)", env)
		for _, d := range deps {
			require.False(t, isTestOnly(d), "the worker (%v) must not depend on %s", env, d)
		}
	}
}
