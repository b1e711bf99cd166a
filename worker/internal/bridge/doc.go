// Package bridge serves a Go http.Handler from toolgate's worker shim (worker/js/shim): one Go runtime
// per isolate, every fetch and scheduled event dispatched into it and served by its own goroutine.
//
// In main (js && wasm):
//
//	bridge.OnScheduled(func(ctx context.Context) error { ... })
//	bridge.Serve(handler) // never returns
//
// Per event, ctx (r.Context() for a request) carries that event's env and its waitUntil: Env, Getenv
// and WaitUntil read them. A panic in a handler is recovered and answered 500; the runtime lives on.
//
// syumai/workers' packages keep working: d1.OpenConnector, cloudflare.Getenv and GetBinding read the
// env of the event whose JavaScript context is current (in workerd every event of an isolate has the
// same env), and cloudflare.WaitUntil keeps the current event alive. WaitUntil here is the precise one:
// it holds the event of its ctx.
//
// The rule for I/O: no JS I/O object (a fetch, its AbortController or body, a D1 statement) may be used
// from another event's turn than the one that created it, or outlive that event: workerd refuses with
// "Cannot perform I/O on behalf of a different request", and the Go runtime dies with every call on
// the isolate. So outbound HTTP goes through Fetch and D1 through D1, which start and await their I/O
// in one call into the shim and never cancel it from Go (callers that stop waiting, such as
// handler.SendFunc and store/hrana, let it finish in the background). Never use
// net/http's client in the worker: its js/wasm transport aborts a fetch from whichever goroutine's
// context ends, in whatever turn that is (store/hrana takes Fetch for libSQL for this reason).
//
// The package is empty outside js/wasm except for the HTTP encoding it shares with its tests.
package bridge
