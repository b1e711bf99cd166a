package store

import (
	"context"
	"fmt"
	"time"
)

// # Usage counters
//
// The dashboard reads counters per (UTC hour, caller, tool, currency), kept
// apart from the idempotency records so that they outlive the sweep. They
// are written three ways, none of which adds a round trip to a call:
//
//   - the money counters (charges, charged, refunds, refunded, credits,
//     credited) follow the ledger in the entry's own statement (an SQL
//     trigger; the memory backend posts them with the entry), so for every
//     (caller, currency) and hour they equal the sum of its entries of that
//     kind. Charges and refunds count under the tool of the entry's record
//     (ClaimParams.Tool), credits under tool "". Nothing else writes them:
//     AddUsage refuses money;
//   - an executed call's counters (calls, free calls, fail_4xx, latency) go
//     with its Complete (CompleteParams.Usage), in the same atomic step, and
//     only if the Complete wins the fence: a Complete retried after a lost
//     reply does not count twice;
//   - outcomes that write nothing (replays, waits, 402, 409, 422, refunded
//     upstream failures) are counted in memory and added in the background
//     by AddUsage, at most every few seconds. What an isolate that dies
//     holds unflushed is lost (at most that interval's worth of those
//     counters on that isolate); money and executed calls are never lost.
//
// Usage rows are kept for a retention that the cron sweep enforces with
// SweepUsage.

// LatencyBounds are the upper bounds of the latency histogram's buckets;
// Usage.Latency has one more bucket for slower calls.
var LatencyBounds = [...]time.Duration{100 * time.Millisecond, 300 * time.Millisecond, time.Second, 3 * time.Second}

// UsageKey names one row of counters: the UTC hour (or, in a query's
// answer, the bucket) it starts at, and the caller, tool and currency.
type UsageKey struct {
	Hour     time.Time
	Caller   string
	Tool     string
	Currency string
}

// Usage is one row of counters. Counts are events; amounts are minor units
// of Currency.
type Usage struct {
	UsageKey
	// Key is the caller's key of an executed call (Caller.KeyID), for the
	// counters per key (see KeyStats): only a Complete's Usage writes them,
	// AddUsage ignores it.
	Key         string
	Calls       int64 // upstream executions whose answer was stored (2xx, or 4xx answered 424)
	FreeCalls   int64 // of Calls, of a free tool
	Replays     int64 // duplicates answered from the store at once
	Waits       int64 // duplicates that waited for a call in flight and got its answer
	R402        int64 // insufficient balance
	R409        int64 // still in progress after the wait
	R422        int64 // key reused with another input
	Fail5xx     int64 // refunded: upstream 5xx, unreachable, unusable answer
	FailTimeout int64 // refunded: the tool's timeout ran out
	Fail4xx     int64 // upstream 4xx: refunded, stored, answered 424 (also in Calls)
	Charges     int64 // money: ledger charge entries
	Charged     int64
	Refunds     int64 // money: ledger refund entries
	Refunded    int64
	Released    int64 // money: what metered calls' holds gave back (ledger release entries); spend = Charged - Refunded - Released
	Credits     int64 // money: ledger credit entries (admin credits, top-ups)
	Credited    int64
	LatencyMs   int64                         // sum over Calls of the upstream's time
	Latency     [len(LatencyBounds) + 1]int64 // histogram of Calls by LatencyBounds
	LastAt      time.Time                     // the latest event counted
}

// HourOf returns the start of t's UTC hour.
func HourOf(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

// ObserveLatency adds one call's upstream time to the latency sum and
// histogram.
func (u *Usage) ObserveLatency(d time.Duration) {
	u.LatencyMs += max(d.Milliseconds(), 0)
	i := 0
	for i < len(LatencyBounds) && d > LatencyBounds[i] {
		i++
	}
	u.Latency[i]++
}

// Add adds o's counters to u (the key is u's).
func (u *Usage) Add(o Usage) {
	u.Calls += o.Calls
	u.FreeCalls += o.FreeCalls
	u.Replays += o.Replays
	u.Waits += o.Waits
	u.R402 += o.R402
	u.R409 += o.R409
	u.R422 += o.R422
	u.Fail5xx += o.Fail5xx
	u.FailTimeout += o.FailTimeout
	u.Fail4xx += o.Fail4xx
	u.Charges += o.Charges
	u.Charged += o.Charged
	u.Refunds += o.Refunds
	u.Refunded += o.Refunded
	u.Released += o.Released
	u.Credits += o.Credits
	u.Credited += o.Credited
	u.LatencyMs += o.LatencyMs
	for i := range u.Latency {
		u.Latency[i] += o.Latency[i]
	}
	if o.LastAt.After(u.LastAt) {
		u.LastAt = o.LastAt
	}
}

// HasMoney reports whether u carries any money counter.
func (u Usage) HasMoney() bool {
	return u.Charges != 0 || u.Charged != 0 || u.Refunds != 0 || u.Refunded != 0 || u.Released != 0 || u.Credits != 0 || u.Credited != 0
}

// UsageQuery selects and groups usage rows: those whose hour is in [From,
// To), of Caller and Tool when set, summed per bucket (Bucket: time.Hour or
// 24*time.Hour, UTC; zero sums the whole range into one bucket starting at
// From) and currency, and per caller and per tool when ByCaller and ByTool
// are set (otherwise those fields of the answer are "").
type UsageQuery struct {
	From, To         time.Time
	Bucket           time.Duration
	Caller, Tool     string
	ByCaller, ByTool bool
}

// CallQuery selects recent records, most recently updated first.
type CallQuery struct {
	Status Status // "" for any
	Tool   string // "" for any
	Caller string // "" for any
	// StuckAt, when set, selects only records in progress whose lease had
	// expired at that instant (abandoned; the sweep settles them).
	StuckAt time.Time
	Limit   int // 1..MaxCallsLimit
}

// MaxCallsLimit bounds CallQuery.Limit.
const MaxCallsLimit = 200

// CallSummary is a record as the admin sees it, with its ledger entries
// (of the current incarnation and earlier ones), oldest first.
type CallSummary struct {
	Record
	Tool    string
	Caller  string
	Entries []Entry
}

// CallerSummary is a caller with its balances and when it was last seen.
type CallerSummary struct {
	Caller
	Balances []CallerBalance
	// LastSeen is the latest usage counted for the caller, zero if none.
	LastSeen time.Time
}

// CallerBalance is one currency's balance of a caller and its debt.
type CallerBalance struct {
	Currency string
	Balance  int64
	Owed     int64
}

// Stats is what the dashboard reads, and the counters' writes that no call
// makes by itself.
type Stats interface {
	// AddUsage adds each row's counters to its (hour, caller, tool,
	// currency) row, all in one atomic step. Hours are truncated to the
	// hour. It returns ErrInvalidArgument, adding nothing, for a row with a
	// money counter (those follow the ledger) or a negative counter.
	AddUsage(ctx context.Context, us []Usage) error
	// Usage returns the summed counters q selects, ordered by bucket,
	// caller, tool and currency. ErrInvalidArgument for a bad query.
	Usage(ctx context.Context, q UsageQuery) ([]Usage, error)
	// Calls returns the records q selects with their ledger entries.
	// ErrInvalidArgument for a bad limit.
	Calls(ctx context.Context, q CallQuery) ([]CallSummary, error)
	// CallerSummaries returns up to limit callers, by id, with their
	// balances and debts.
	CallerSummaries(ctx context.Context, limit int) ([]CallerSummary, error)
	// SweepUsage deletes at most limit usage rows (per caller and per
	// key, those first) whose hour is before before, and returns how many
	// it deleted.
	SweepUsage(ctx context.Context, before time.Time, limit int) (int, error)
	// CheckUsage verifies the usage invariant and returns an error
	// describing the first violation: for every (hour, caller, currency)
	// that has usage rows, their money counters summed over tools equal
	// that hour's ledger entries of the kind; and every such hour of the
	// ledger from the oldest usage row on has usage rows (the retention
	// deletes whole hours, oldest first); and the same per key (KeyStats)
	// for every (hour, caller, key, currency), with a refund or release
	// counted under its charge's key.
	CheckUsage(ctx context.Context) error
	KeyStats
}

// ValidateUsage checks rows for AddUsage.
func ValidateUsage(us []Usage) error {
	for _, u := range us {
		if u.HasMoney() {
			return errInvalid("usage: money counters follow the ledger, AddUsage refuses them")
		}
		for _, n := range []int64{u.Calls, u.FreeCalls, u.Replays, u.Waits, u.R402, u.R409, u.R422,
			u.Fail5xx, u.FailTimeout, u.Fail4xx, u.LatencyMs} {
			if n < 0 {
				return errInvalid("usage: negative counter")
			}
		}
		if u.Caller == "" || u.Currency == "" {
			return errInvalid("usage: caller and currency are required")
		}
	}
	return nil
}

// ValidateUsageQuery checks q for Usage.
func ValidateUsageQuery(q UsageQuery) error {
	switch {
	case !q.From.Before(q.To):
		return errInvalid("usage query: from must be before to")
	case q.Bucket != 0 && q.Bucket != time.Hour && q.Bucket != 24*time.Hour:
		return errInvalid("usage query: bucket must be an hour or a day")
	}
	return nil
}

// ValidateCallQuery checks q for Calls.
func ValidateCallQuery(q CallQuery) error {
	if q.Limit < 1 || q.Limit > MaxCallsLimit {
		return errInvalid("call query: limit must be 1..200")
	}
	return nil
}

func errInvalid(msg string) error { return fmt.Errorf("%w: %s", ErrInvalidArgument, msg) }
