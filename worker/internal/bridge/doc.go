// Package bridge serves a Go http.Handler from toolgate's worker shim (worker/js/shim): one Go runtime
// per isolate, every fetch and scheduled event dispatched into it and served by its own goroutine.
//
// In main (js && wasm):
//
//	bridge.OnScheduled(func(ctx context.Context) error { ... })
//	bridge.Serve(handler) // never returns
//
// Per event, ctx (r.Context() for a request) carries that event's env and its waitUntil: Env, Getenv
// and WaitUntil read them. A panic in a handler is recovered and answered 500 problem+json; the runtime
// lives on. When the runtime itself dies (a wasm trap such as a V8 stack overflow, a panic outside any
// recover, Go exiting), the shim answers every request in flight on it 503 problem+json
// (https://toolgate.dev/problems/runtime-restarted, retryable, Retry-After from SetCrashRetryAfter or
// 30 s), logs one JSON line with the cause and the instance id, and the next request boots a new runtime.
//
// # I/O belongs to the request that started it
//
// The rule: no I/O object may outlive or cross the request that created it. workerd gives every event
// its own I/O context; a fetch, a D1 query or a timer belongs to the context that was current when it
// started, is cancelled when that context ends, and touching it from another request's context kills
// the isolate ("Cannot perform I/O on behalf of a different request"). Go, though, runs the goroutines of
// every request whenever JavaScript enters it, so Go code cannot know which context is current: the
// shim tracks it (the "host") and keeps each host alive while work Go started in it is pending. The
// request that created an I/O object is therefore its host, which may be another request than the one
// whose goroutine started it.
//
// Fetch follows the rule when it aborts. The shim creates the fetch's AbortController in the host that
// starts the fetch, with a timer in that same host that aborts at the deadline of the request's
// context. When the context is cancelled earlier (the caller gave up, the lease was lost), Go does not
// call abort(): it resolves a promise whose reaction, registered in the fetch's host when the fetch
// started, calls it; a reaction runs in the context that registered it, whichever context resolves the
// promise. When the fetch settles, the shim clears the timer and drops the resolver, so nothing of the
// fetch outlives it. A dying runtime aborts its fetches the same way.
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
// engine.SendFunc and store/hrana, let it finish in the background). Never use
// net/http's client in the worker: its js/wasm transport aborts a fetch from whichever goroutine's
// context ends, in whatever turn that is (store/hrana takes Fetch for libSQL for this reason).
//
// The package is empty outside js/wasm except for the HTTP encoding it shares with its tests.
package bridge
