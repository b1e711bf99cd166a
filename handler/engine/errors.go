package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/toolgate/toolgate-go/handler/jsonschema"
	"github.com/toolgate/toolgate-go/store"
)

// Errors of the engine. Package problem maps each of them, and the store's,
// to one RFC 9457 problem.
var (
	// ErrInvalidIdempotencyKey means the Idempotency-Key is missing, longer
	// than 255 bytes, or not printable ASCII.
	ErrInvalidIdempotencyKey = errors.New("invalid idempotency key")
	// ErrUnknownTool means the catalog has no such tool.
	ErrUnknownTool = errors.New("unknown tool")
	// ErrUnauthorized means the bearer key (or admin token) is missing or
	// unknown.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnknownCaller means an admin request named a caller that does not
	// exist.
	ErrUnknownCaller = errors.New("unknown caller")
	// ErrLostLease means another attempt took the record over while this one
	// ran (its lease expired without a heartbeat getting through). This
	// attempt stored nothing; a retry replays or waits for the new owner.
	ErrLostLease = errors.New("lost the lease on the idempotency key")
)

// InvalidInputError means the call body is not one JSON value in UTF-8.
type InvalidInputError struct{ Reason string }

// Error implements error.
func (e *InvalidInputError) Error() string { return "invalid input: " + e.Reason }

// InputSchemaError means the input is JSON but does not match the tool's
// inputSchema. It is returned before the claim: nothing was charged, stored
// or executed, and the key stays free for a corrected input.
type InputSchemaError struct {
	Tool string
	// Violations lists what is wrong, at most jsonschema.MaxViolations, in
	// a stable order.
	Violations []jsonschema.Violation
	// Truncated reports that there were more violations than listed (or
	// that the check ran out of steps, see jsonschema.MaxSteps).
	Truncated bool
}

// Error implements error.
func (e *InputSchemaError) Error() string {
	return fmt.Sprintf("input does not match the inputSchema of %q: %d violations", e.Tool, len(e.Violations))
}

// InProgressError means another attempt holds the key and the wait for it
// ran out (or waiting is off). Retry after RetryAfter.
type InProgressError struct{ RetryAfter time.Duration }

// Error implements error.
func (e *InProgressError) Error() string {
	return fmt.Sprintf("call in progress: retry after %s", e.RetryAfter)
}

// UpstreamError means the upstream failed: a network error, a timeout, a
// 5xx, a 1xx/3xx, or a response too large to store. The record is marked
// failed, so a retry with the same key executes again.
type UpstreamError struct {
	StatusCode int    // the upstream's status, 0 when there was no response
	Timeout    bool   // the tool's timeout ran out
	Reason     string // what went wrong, safe to show the caller
	// Refunded reports whether the charge was returned. It is false for a
	// free tool, and when the refund itself failed: the charge then stays on
	// the key, and the next attempt at the key inherits it instead of
	// charging again.
	Refunded bool
	Price    int64
	Balance  int64 // balance after the refund, when Refunded
	Currency string
	// Free reports a call of the tool's free tier, and QuotaReturned
	// whether its unit of quota was given back.
	Free, QuotaReturned bool
}

// QuotaExhaustedError means a tool of price 0 with a free tier was called
// past its quota: nothing was executed. It maps to 429 until ResetsAt.
type QuotaExhaustedError struct {
	Tool     string
	Calls    int64
	Per      store.Period
	ResetsAt time.Time
	// RetryAfter is how long until ResetsAt, by the engine's clock.
	RetryAfter time.Duration
}

// Error implements error.
func (e *QuotaExhaustedError) Error() string {
	return fmt.Sprintf("free quota of %s exhausted (%d calls per %s)", e.Tool, e.Calls, e.Per)
}

// Unwrap makes errors.Is(err, store.ErrQuotaExhausted) hold.
func (e *QuotaExhaustedError) Unwrap() error { return store.ErrQuotaExhausted }

// Error implements error.
func (e *UpstreamError) Error() string { return "upstream failed: " + e.Reason }

// StoreError wraps a store failure that is none of the store's sentinel
// errors: the database is unreachable or failing. It maps to 503.
type StoreError struct {
	Op  string
	Err error
}

// Error implements error.
func (e *StoreError) Error() string { return e.Op + ": " + e.Err.Error() }

// Unwrap returns the store's error.
func (e *StoreError) Unwrap() error { return e.Err }

// ProblemTypeBase prefixes every problem type URI; the suffix is a stable
// slug such as "insufficient-funds". Package problem renders the problems;
// the engine needs the base for the 424 answer it stores.
const ProblemTypeBase = "https://toolgate.dev/problems/"
