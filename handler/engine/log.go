package engine

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// callLog collects the fields of a call's log line.
type callLog struct {
	start  time.Time
	key    string // logKey of the scoped key; empty before scoping
	caller string
	tool   string
}

type roundTripsKey struct{}

// CountRoundTrips returns ctx with the round-trip counter that the call's
// log line reports (see store.WithRoundTrips), reusing one already there. An
// HTTP middleware installs it first, so that authentication is counted too.
func CountRoundTrips(ctx context.Context) context.Context {
	ctx, _ = roundTripsFrom(ctx)
	return ctx
}

// LogRejected writes the log line of a call that a surface refused before
// it reached Call (no caller, a bad key or body): caller and tool as far as
// known, the error, and the round trips so far.
func (e *Engine) LogRejected(ctx context.Context, caller, tool string, start time.Time, err error) {
	ctx, rt := roundTripsFrom(ctx)
	e.logCall(ctx, callLog{start: start, caller: caller, tool: tool}, rt, CallResult{}, err)
}

func roundTripsFrom(ctx context.Context) (context.Context, *store.RoundTrips) {
	if rt, ok := ctx.Value(roundTripsKey{}).(*store.RoundTrips); ok {
		return ctx, rt
	}
	ctx, rt := store.WithRoundTrips(ctx)
	return context.WithValue(ctx, roundTripsKey{}, rt), rt
}

// outcomeFor names what a call did.
func outcomeFor(res CallResult, err error) Outcome {
	var ue *UpstreamError
	switch {
	case err == nil:
		return res.Outcome
	case errors.Is(err, store.ErrFingerprintMismatch):
		return OutcomeMismatch
	case errors.Is(err, store.ErrInsufficientFunds):
		return OutcomeInsufficient
	case errors.As(err, &ue) && ue.Refunded:
		return OutcomeRefunded
	}
	return OutcomeFailed
}

// logCall writes the one JSON line of a call: the hashed scoped key, caller,
// tool, outcome, amount charged by this request, status, duration and
// database round trips. It never logs keys, tokens or bodies.
func (e *Engine) logCall(ctx context.Context, l callLog, rt *store.RoundTrips, res CallResult, err error) {
	status := res.StatusCode
	if err != nil {
		status = e.statusOf(err)
	}
	outcome := outcomeFor(res, err)
	amount := "0"
	currency := ""
	if err == nil && !res.Replayed {
		amount, currency = res.Receipt.Amount, res.Receipt.Currency
	}
	attrs := []slog.Attr{
		slog.String("key", l.key),
		slog.String("caller", l.caller),
		slog.String("tool", l.tool),
		slog.String("outcome", string(outcome)),
		slog.String("amount", amount),
		slog.String("currency", currency),
		slog.Int("status", status),
		slog.Float64("durationMs", float64(e.now().Sub(l.start).Microseconds())/1000),
		slog.Int64("roundTrips", rt.Count()),
	}
	level := slog.LevelInfo
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
		if status >= http.StatusInternalServerError {
			level = slog.LevelError
		}
	}
	// Straight to the handler, as Logger.LogAttrs does but without walking
	// the stack for the caller's PC (only AddSource reads it): a walk costs
	// more than the rest of the line in wasm.
	h := e.logger.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, "call", 0)
	r.AddAttrs(attrs...)
	_ = h.Handle(ctx, r) // as Logger does: a failed log line fails nothing
}
