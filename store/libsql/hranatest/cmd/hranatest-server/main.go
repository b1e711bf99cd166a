//go:build !js

// Command hranatest-server serves a SQLite file over Hrana v2 HTTP for tests
// that drive a libSQL client from another process (Node, workerd).
//
// It prints its base URL, such as http://127.0.0.1:41234, as the first line on
// stdout, then serves until SIGINT or SIGTERM, or until its stdin reaches EOF
// when stdin is a pipe, so it exits with the process that started it.
//
//	hranatest-server -db /tmp/test.db [-addr 127.0.0.1:0] [-stream-idle-timeout 10s]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/toolgate/toolgate-go/store/libsql/hranatest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hranatest-server:", err)
		os.Exit(1)
	}
}

func run() error {
	dbPath := flag.String("db", "", "SQLite database file, created if missing (required)")
	addr := flag.String("addr", "127.0.0.1:0", "loopback address to listen on")
	idle := flag.Duration("stream-idle-timeout", hranatest.DefaultStreamIdleTimeout, "close streams unused for this long")
	flag.Parse()
	if *dbPath == "" {
		return errors.New("-db is required")
	}

	srv, err := hranatest.Start(*dbPath, hranatest.WithAddr(*addr), hranatest.WithStreamIdleTimeout(*idle))
	if err != nil {
		return err
	}
	fmt.Println(srv.URL())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		go func() {
			io.Copy(io.Discard, os.Stdin) //nolint:errcheck // EOF or an error both mean the parent is gone
			stop()
		}()
	}
	<-ctx.Done()
	return srv.Close()
}
