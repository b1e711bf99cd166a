//go:build js && wasm

package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall/js"
	"time"
)

var (
	handler   http.Handler
	scheduled func(ctx context.Context) error
	onStart   func(ctx context.Context)
	started   atomic.Bool // onStart ran to its end
	uint8JS   = js.Global().Get("Uint8Array")
)

// event is one fetch or scheduled invocation: the shim's Event object and its env.
type event struct {
	v       js.Value // the shim's Event: respond, answer, fail, hold, release
	envOnce sync.Once
	env     js.Value // v.env, read when first asked for (a paid call never does: see D1)
}

// envValue returns the event's env.
func (e *event) envValue() js.Value {
	e.envOnce.Do(func() { e.env = e.v.Get("env") })
	return e.env
}

type eventKey struct{}

func withEvent(ctx context.Context, e *event) context.Context {
	return context.WithValue(ctx, eventKey{}, e)
}

func eventFrom(ctx context.Context) (*event, bool) {
	e, ok := ctx.Value(eventKey{}).(*event)
	return e, ok
}

// Serve serves h (http.DefaultServeMux if nil) for every fetch event the shim dispatches to this Go
// instance, each on its own goroutine, and the function given to OnScheduled for cron events. It never
// returns. It panics if the worker was not built with toolgate's shim (`make build`).
//
// Responses are buffered and sent when the handler returns. A handler panic is logged and answered
// 500 problem+json; the instance serves on. If the runtime itself dies (a wasm trap such as a stack
// overflow, a panic outside any recover, os.Exit), the shim answers every request in flight on it 503
// problem+json with Retry-After (see SetCrashRetryAfter) and the next request starts a new runtime.
func Serve(h http.Handler) {
	if h == nil {
		h = http.DefaultServeMux
	}
	handler = h
	shim := js.Global().Get("context").Get("toolgate")
	if shim.IsUndefined() {
		panic("bridge: this worker.mjs is not toolgate's shim (worker/js/shim); run `make build`")
	}
	api := js.Global().Get("Object").New()
	api.Set("fetch", js.FuncOf(dispatchFetch))
	api.Set("scheduled", js.FuncOf(dispatchScheduled))
	api.Set("stats", js.FuncOf(stats))
	if onStart != nil {
		api.Set("start", js.FuncOf(dispatchStart))
	}
	shim.Call("register", api)
	select {}
}

// SetCrashRetryAfter tells the shim how long a caller should wait before retrying a request that was in
// flight when this Go runtime died (its Retry-After, rounded up to whole seconds; the shim's default is
// 30 s). A worker whose calls hold leases passes its longest lease: by then the abandoned call's lease
// has expired and a retry with the same key takes it over instead of waiting for it. The value outlives
// this runtime, for the requests of its isolate. Values under a second are ignored.
func SetCrashRetryAfter(d time.Duration) {
	if shimJS.Type() == js.TypeObject {
		shimJS.Call("setCrashRetryAfter", d.Seconds())
	}
}

// OnScheduled sets the function run for every scheduled (cron) event; call it before Serve. ctx carries
// the event (see Env, WaitUntil, ScheduledEvent). A returned error fails the event. Without it,
// scheduled events succeed and do nothing.
func OnScheduled(fn func(ctx context.Context) error) {
	scheduled = fn
}

// OnStart sets a function that prepares the program (parses its configuration, builds its handler)
// before the first event; call it before Serve. When the shim boots the runtime at the module's start-up
// (TOOLGATE_BOOT_SEED, see worker/js/shim/worker.mjs), it runs fn there, once, with a ctx whose Env is the
// module's env; otherwise it is never called, and the program prepares on first use as before. fn must
// do no I/O and start no asynchronous call (D1, fetch, Await): the start-up allows none, and they fail.
// It runs to its end before the first event is dispatched, unless it blocks.
func OnStart(fn func(ctx context.Context)) {
	onStart = fn
}

// dispatchStart is the shim's start-up entry: (the start-up's host).
func dispatchStart(_ js.Value, args []js.Value) any {
	e := &event{v: args[0]}
	goReuse(func() {
		defer func() {
			if v := recover(); v != nil {
				log.Printf("bridge: panic in the start-up function: %v\n%s", v, debug.Stack())
			}
		}()
		onStart(withEvent(context.Background(), e))
		started.Store(true)
	})
	return nil
}

// Env returns the env object (bindings, vars, secrets) of the event ctx belongs to, or js.Undefined()
// if ctx does not come from an event served by Serve.
func Env(ctx context.Context) js.Value {
	if e, ok := eventFrom(ctx); ok {
		return e.envValue()
	}
	return js.Undefined()
}

// Getenv returns the string var or secret name of ctx's event, or "" if it is unset or not a string.
func Getenv(ctx context.Context, name string) string {
	v := Env(ctx)
	if v.Type() != js.TypeObject {
		return ""
	}
	if s := v.Get(name); s.Type() == js.TypeString {
		return s.String()
	}
	return ""
}

// WaitUntil runs fn on a new goroutine and keeps ctx's event alive until fn returns (the Workers
// waitUntil), even after the response was sent. fn gets ctx without its cancellation. A panic in fn is
// logged and recovered. If ctx does not come from an event, fn still runs, but nothing keeps the isolate
// alive for it.
func WaitUntil(ctx context.Context, fn func(ctx context.Context)) {
	ctx = context.WithoutCancel(ctx)
	e, ok := eventFrom(ctx)
	if ok {
		e.v.Call("hold")
	}
	go func() {
		defer func() {
			if v := recover(); v != nil {
				log.Printf("bridge: panic in WaitUntil job: %v\n%s", v, debug.Stack())
			}
			if ok {
				e.v.Call("release")
			}
		}()
		fn(ctx)
	}()
}

// Schedule describes the cron event a scheduled ctx belongs to.
type Schedule struct {
	Cron          string    // the cron expression that fired
	ScheduledTime time.Time // when it was scheduled to fire
}

type scheduleKey struct{}

// ScheduledEvent returns the cron event ctx belongs to; ok is false outside a scheduled event.
func ScheduledEvent(ctx context.Context) (s Schedule, ok bool) {
	s, ok = ctx.Value(scheduleKey{}).(Schedule)
	return s, ok
}

// dispatchFetch is the shim's entry for a request: (ev, the request packed as appendRequest does: its
// length in the inbox, or a Uint8Array if it did not fit there).
func dispatchFetch(_ js.Value, args []js.Value) any {
	var packed []byte
	if args[1].Type() == js.TypeNumber {
		packed = fromInbox(args[1]) // first: see inbox
	} else {
		packed = make([]byte, args[1].Get("byteLength").Int())
		js.CopyBytesToGo(packed, args[1])
	}
	e := &event{v: args[0]}
	goReuse(func() { serveFetch(e, packed) })
	return nil
}

// Events run on reused goroutines: a new goroutine starts with a small stack and grows it by copying,
// several times per request, which shows in profiles. Up to maxIdleWorkers wait for the next event.
const maxIdleWorkers = 32

var (
	jobs        = make(chan func())
	idleWorkers int
	workersMu   sync.Mutex
)

// goReuse runs job on an idle worker goroutine, or on a new one.
func goReuse(job func()) {
	select {
	case jobs <- job:
	default:
		go worker(job)
	}
}

func worker(job func()) {
	for {
		job()
		workersMu.Lock()
		if idleWorkers >= maxIdleWorkers {
			workersMu.Unlock()
			return
		}
		idleWorkers++
		workersMu.Unlock()
		job = <-jobs
		workersMu.Lock()
		idleWorkers--
		workersMu.Unlock()
	}
}

func serveFetch(e *event, packed []byte) {
	ctx, cancel := context.WithCancel(withEvent(context.Background(), e))
	defer cancel() // as net/http does once ServeHTTP returns
	method, url, headerLines, body, err := unpackRequest(packed)
	if err != nil {
		e.v.Call("fail", fmt.Sprintf("bridge: bad request: %v", err))
		return
	}
	r, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		e.v.Call("fail", fmt.Sprintf("bridge: bad request: %v", err))
		return
	}
	parseHeaderLines(headerLines, r.Header)
	r.RequestURI = r.URL.RequestURI()
	r.RemoteAddr = r.Header.Get("Cf-Connecting-Ip")
	if body == nil {
		r.Body = http.NoBody
	}

	w := newResponseRecorder()
	if !serveRecovered(w, r) {
		w = newResponseRecorder()
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(panicProblem))
	}
	b := appendResponse(make([]byte, 0, 512+w.body.Len()), w.statusCode(), "", formatHeaderLines(w.header), w.body.Bytes())
	callShim(shimJS, "respond", e.v, outBytes(b))
}

// panicProblem answers a request whose handler panicked (RFC 9457; the type is handler's "internal").
const panicProblem = `{"type":"https://toolgate.dev/problems/internal","title":"Internal error","status":500,` +
	`"detail":"the gateway failed unexpectedly"}` + "\n"

// serveRecovered runs the handler and reports false if it panicked (logged with its stack).
func serveRecovered(w http.ResponseWriter, r *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				return
			}
			log.Printf("bridge: panic serving %s %s: %v\n%s", r.Method, r.URL.Path, v, debug.Stack())
		}
	}()
	handler.ServeHTTP(w, r)
	return true
}

// dispatchScheduled is the shim's entry for a cron event: (ev, cron, scheduledTime in Unix ms).
func dispatchScheduled(_ js.Value, args []js.Value) any {
	e := &event{v: args[0]}
	s := Schedule{Cron: args[1].String(), ScheduledTime: time.UnixMilli(int64(args[2].Float())).UTC()}
	goReuse(func() {
		ctx, cancel := context.WithCancel(context.WithValue(withEvent(context.Background(), e), scheduleKey{}, s))
		defer cancel()
		if err := runScheduled(ctx); err != nil {
			e.v.Call("fail", err.Error())
			return
		}
		e.v.Call("answer", 0, "", js.Null())
	})
	return nil
}

func runScheduled(ctx context.Context) (err error) {
	defer func() {
		if v := recover(); v != nil {
			log.Printf("bridge: panic in scheduled event: %v\n%s", v, debug.Stack())
			err = errors.New("bridge: scheduled function panicked")
		}
	}()
	if scheduled == nil {
		return nil
	}
	return scheduled(ctx)
}

// runtimeStats is what the shim's stats route reports about the Go runtime.
type runtimeStats struct {
	HeapAlloc    uint64 `json:"heapAlloc"`
	HeapInuse    uint64 `json:"heapInuse"`
	HeapSys      uint64 `json:"heapSys"`
	HeapObjects  uint64 `json:"heapObjects"`
	Sys          uint64 `json:"sys"`
	TotalAlloc   uint64 `json:"totalAlloc"`
	NumGC        uint32 `json:"numGC"`
	NumGoroutine int    `json:"goroutines"`
	// Started: the program's start-up function (OnStart) ran at the module's start-up.
	Started bool `json:"started"`
}

// stats answers the shim synchronously with runtimeStats as JSON, after a GC if args[0] is true.
func stats(_ js.Value, args []js.Value) any {
	if len(args) > 0 && args[0].Truthy() {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b, _ := json.Marshal(runtimeStats{
		HeapAlloc: m.HeapAlloc, HeapInuse: m.HeapInuse, HeapSys: m.HeapSys, HeapObjects: m.HeapObjects,
		Sys: m.Sys, TotalAlloc: m.TotalAlloc, NumGC: m.NumGC, NumGoroutine: runtime.NumGoroutine(), Started: started.Load(),
	})
	return string(b)
}
