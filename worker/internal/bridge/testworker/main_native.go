//go:build !js

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "testworker runs only inside workerd: GOOS=js GOARCH=wasm (see worker/internal/benchharness)")
	os.Exit(2)
}
