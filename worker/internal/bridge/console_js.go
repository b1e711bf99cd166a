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
// asynchronous file API, which costs a js.FuncOf and a round trip per write. Under toolgate's shim a
// line crosses as bytes (the shim's log, through the outbox), not as a JS string Go would have to
// create and release.
var Console io.Writer = &console{js: js.Global().Get("console")}

type console struct {
	mu  sync.Mutex
	js  js.Value
	buf []byte // a partial line
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			break
		}
		if len(c.buf) > 0 {
			c.buf = append(c.buf, p[:i]...)
			c.log(c.buf)
			c.buf = nil // drop the backing array once drained
		} else {
			c.log(p[:i])
		}
		p = p[i+1:]
	}
	c.buf = append(c.buf, p...)
	return n, nil
}

func (c *console) log(line []byte) {
	if shimJS.Type() == js.TypeObject {
		callShim(shimJS, "log", outBytes(line))
		return
	}
	c.js.Call("log", string(line))
}
