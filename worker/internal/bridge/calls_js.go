//go:build js && wasm

package bridge

import (
	"context"
	"errors"
	"sync"
	"syscall/js"
	"unsafe"
)

// Asynchronous calls into the shim (context.toolgate): each gets an id, and the shim answers every one
// through the single settle callback, entered in the JS context that made the call. Unlike awaiting a
// promise with js.FuncOf then/catch (syumai's jsutil.AwaitPromise), this creates no js.Func per call
// and so leaks none: the callback that is never invoked is never released there.

var (
	shimJS   = js.Global().Get("context").Get("toolgate")
	callsMu  sync.Mutex
	calls    = map[int]chan settled{}
	nextCall int
)

// inbox is where the shim hands Go bytes without a JS value: the outcome of a call that answers bytes
// (D1 rows as JSON, a packed fetch response, an error's message) and a dispatched request. Every JS
// value Go receives costs it a finalizer, a call back into JS to release it, and more calls to read it
// (a string's length, then its bytes); a number costs none of these. The shim learns the inbox's
// address and size once (init): Go's heap objects never move, and this variable keeps it alive. The
// shim must view it through the memory's current buffer each time, since the memory may have grown.
//
// The invariant that makes one buffer enough: the shim writes the inbox only from its event loop (a
// promise's reaction, a dispatched event), never inside a call from Go, and then at once calls into Go
// (settle, or the dispatch of a request) with the length written; Go copies inbox[:n] out inside that
// callback, before it calls the shim. JavaScript is single-threaded, so nothing else writes the inbox
// in between, even if another goroutine runs meanwhile. Values that do not fit cross as JS values.
var inbox = make([]byte, 64<<10)

// outbox is the inbox's counterpart for bytes Go hands the shim (a packed response or request, a D1
// statement's arguments, a log line): callShim copies them into the outbox and passes their length in
// their place, and the shim copies or decodes outbox[:n] before that call returns. Bytes that do not fit
// cross as a new Uint8Array. outboxMu is held for the call: another goroutine may run before the shim
// has read the outbox (an allocation on the way may park this one to assist the GC). The shim's methods
// that take outbox bytes never call back into Go, so no callback nested in the call wants outboxMu.
var (
	outboxMu sync.Mutex
	outbox   = make([]byte, 64<<10)
)

// outBytes is an argument of callShim that crosses as bytes (see outbox).
type outBytes []byte

// callShim calls v's method with args, of which at most one is outBytes (it passes through the outbox).
func callShim(v js.Value, method string, args ...any) js.Value {
	for i, a := range args {
		b, ok := a.(outBytes)
		if !ok {
			continue
		}
		if len(b) > len(outbox) {
			u := uint8JS.New(len(b))
			js.CopyBytesToJS(u, b)
			args[i] = u
			break
		}
		outboxMu.Lock()
		defer outboxMu.Unlock()
		args[i] = copy(outbox, b)
		break
	}
	return v.Call(method, args...)
}

// errNoShim is returned by calls made under a worker.mjs that is not toolgate's shim.
var errNoShim = errors.New("bridge: worker.mjs is not toolgate's shim (worker/js/shim); run `make build`")

// settled is a call's outcome: its JS value, or its bytes when the shim put them in the inbox.
type settled struct {
	v       js.Value
	b       []byte
	inInbox bool // b holds the outcome (copied out of the inbox); v is unset
	err     error
}

// bytes returns the outcome as bytes: a string's UTF-8 or a Uint8Array's contents, whether they came
// through the inbox or as a JS value.
func (s settled) bytes() []byte {
	if s.inInbox {
		return s.b
	}
	switch s.v.Type() {
	case js.TypeString:
		return []byte(s.v.String())
	case js.TypeObject:
		b := make([]byte, s.v.Get("byteLength").Int())
		js.CopyBytesToGo(b, s.v)
		return b
	}
	return nil
}

func init() {
	if shimJS.Type() == js.TypeObject {
		shimJS.Call("init", js.FuncOf(settle), uintptr(unsafe.Pointer(unsafe.SliceData(inbox))), len(inbox),
			uintptr(unsafe.Pointer(unsafe.SliceData(outbox))), len(outbox))
	}
}

// How the shim's settle(id, how, x) hands over a call's outcome: bits of how.
const (
	settleOK      = 1 // the call succeeded; without it, it failed and the outcome is the error's message
	settleInInbox = 2 // the outcome's bytes are inbox[:x]; without it, x is the outcome (a JS value)
)

// fromInbox copies inbox[:n] out, n being a length the shim wrote (see inbox).
func fromInbox(x js.Value) []byte {
	n := x.Int()
	if n < 0 || n > len(inbox) {
		panic("bridge: the shim wrote past the inbox")
	}
	return append(make([]byte, 0, n), inbox[:n]...)
}

// settle is the shim's answer to call id: (id, how, value or error message or inbox length).
func settle(_ js.Value, args []js.Value) any {
	id := args[0].Int()
	how := args[1].Int()
	var s settled
	if how&settleInInbox != 0 {
		s.b, s.inInbox = fromInbox(args[2]), true // first: see inbox
	} else {
		s.v = args[2]
	}
	callsMu.Lock()
	ch := calls[id]
	delete(calls, id)
	callsMu.Unlock()
	if ch == nil {
		return nil
	}
	if how&settleOK == 0 {
		if s.inInbox {
			s.err = errors.New(string(s.b))
		} else {
			s.err = errors.New(s.v.String())
		}
		s.b, s.inInbox, s.v = nil, false, js.Value{}
	}
	ch <- s // buffered: never blocks the event handler
	return nil
}

// call runs the shim's asynchronous method with args and waits for its outcome.
func call(method string, args ...any) (settled, error) {
	return callCtx(context.Background(), method, args...)
}

// callCtx is call for a method the shim can abort (fetch): when ctx ends first, it asks the shim to
// abort call id (the shim runs the abort in the JS context that started the call) and returns ctx's
// error without waiting for the call to settle; its late settle finds no waiter and is dropped.
func callCtx(ctx context.Context, method string, args ...any) (settled, error) {
	if shimJS.Type() != js.TypeObject {
		return settled{}, errNoShim
	}
	ch := make(chan settled, 1)
	callsMu.Lock()
	nextCall++
	id := nextCall
	calls[id] = ch
	callsMu.Unlock()
	callShim(shimJS, method, append([]any{id}, args...)...)
	done := ctx.Done()
	if done == nil { // a call that cannot be abandoned (D1): a plain receive costs less than a select
		s := <-ch
		return s, s.err
	}
	select {
	case s := <-ch:
		return s, s.err
	case <-done:
		callsMu.Lock()
		delete(calls, id)
		callsMu.Unlock()
		shimJS.Call("abort", id)
		return settled{}, context.Cause(ctx)
	}
}

// Await waits until the JS promise (or value) p settles and returns its value. It returns an error
// holding the rejection's message if p rejects.
func Await(p js.Value) (js.Value, error) {
	s, err := call("await", p)
	return s.v, err
}
