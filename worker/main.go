//go:build !js

// Command worker is toolgate's native twin of the Cloudflare Worker: the same HTTP surface as a plain
// net/http server, for local runs (make run) and host-side tests.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", envOr("ADDR", "127.0.0.1:8787"), "listen address (env ADDR)")
	flag.Parse()
	srv := &http.Server{Addr: *addr, Handler: newHandler(deps{}), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("toolgate (native) listening on http://%s", *addr)
	log.Fatal(srv.ListenAndServe())
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
