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
// The package is empty outside js/wasm except for the HTTP encoding it shares with its tests.
package bridge
