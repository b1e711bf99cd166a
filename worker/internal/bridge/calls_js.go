//go:build js && wasm

package bridge

import (
	"context"
	"errors"
	"sync"
	"syscall/js"
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

// errNoShim is returned by calls made under a worker.mjs that is not toolgate's shim.
var errNoShim = errors.New("bridge: worker.mjs is not toolgate's shim (worker/js/shim); run `make build`")

type settled struct {
	v   js.Value
	err error
}

func init() {
	if shimJS.Type() == js.TypeObject {
		shimJS.Call("init", js.FuncOf(settle))
	}
}

// settle is the shim's answer to call id: (id, ok, value or error message).
func settle(_ js.Value, args []js.Value) any {
	id := args[0].Int()
	callsMu.Lock()
	ch := calls[id]
	delete(calls, id)
	callsMu.Unlock()
	if ch != nil {
		s := settled{v: args[2]}
		if !args[1].Bool() {
			s.err = errors.New(args[2].String())
		}
		ch <- s // buffered: never blocks the event handler
	}
	return nil
}

// call runs the shim's asynchronous method with args and waits for its outcome.
func call(method string, args ...any) (js.Value, error) {
	return callCtx(context.Background(), method, args...)
}

// callCtx is call for a method the shim can abort (fetch): when ctx ends first, it asks the shim to
// abort call id (the shim runs the abort in the JS context that started the call) and returns ctx's
// error without waiting for the call to settle; its late settle finds no waiter and is dropped.
func callCtx(ctx context.Context, method string, args ...any) (js.Value, error) {
	if shimJS.Type() != js.TypeObject {
		return js.Value{}, errNoShim
	}
	ch := make(chan settled, 1)
	callsMu.Lock()
	nextCall++
	id := nextCall
	calls[id] = ch
	callsMu.Unlock()
	shimJS.Call(method, append([]any{id}, args...)...)
	select {
	case s := <-ch:
		return s.v, s.err
	case <-ctx.Done():
		callsMu.Lock()
		delete(calls, id)
		callsMu.Unlock()
		shimJS.Call("abort", id)
		return js.Value{}, context.Cause(ctx)
	}
}

// Await waits until the JS promise (or value) p settles and returns its value. It returns an error
// holding the rejection's message if p rejects.
func Await(p js.Value) (js.Value, error) {
	return call("await", p)
}
