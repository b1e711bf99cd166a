//go:build js && wasm

package bridge

import (
	"bytes"
	"io"
	"sync"
	"syscall/js"
)

// Console is an io.Writer that logs each complete line with console.log, where Workers logs (and
// wrangler dev) collect it. Partial lines wait for their newline. Use it for the worker's logger, e.g.
// slog.New(slog.NewJSONHandler(bridge.Console, nil)): os.Stderr gets there too, but through Go's
// asynchronous file API, which costs a js.FuncOf and a round trip per write.
var Console io.Writer = &console{js: js.Global().Get("console")}

type console struct {
	mu  sync.Mutex
	js  js.Value
	buf []byte
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	for {
		i := bytes.IndexByte(c.buf, '\n')
		if i < 0 {
			break
		}
		c.js.Call("log", string(c.buf[:i]))
		c.buf = c.buf[i+1:]
	}
	if len(c.buf) == 0 {
		c.buf = c.buf[:0:0] // drop the backing array once drained
	}
	return len(p), nil
}
