package store

import (
	"context"
	"fmt"
	"time"
)

// # Usage counters per key
//
// Next to the counters per caller (Stats), each of a caller's keys has its
// own, per (UTC hour, caller, key, tool, currency), kept the same ways and
// for the same retention (SweepUsage deletes both):
//
//   - the money counters follow the ledger in the entry's own statement: a
//     charge counts under the key it was made with (ChargeParams.KeyID), a
//     refund, or a release (the unused part of a metered hold given back),
//     under the key of the charge it reduces, in the entry's hour. So for
//     every (hour, caller, key, currency) they equal that hour's entries of
//     the key, by construction: Stats.CheckUsage verifies it;
//   - an executed call counts under Usage.Key with its Complete, in the
//     same statement that counts it for the caller (no round trip and no
//     statement more), and only if the Complete wins the fence.
//
// The key is the ledger's: "" for entries made before a caller had keys
// (its key was then the one it was created with, OriginalKeyID). Outcomes
// that write nothing (replays, 402s, ...) are counted per caller only.

// KeyUsage is the counters of one of a caller's keys, for one tool and
// currency, summed over a UTC day (Day is its start). Amounts are minor
// units of Currency.
type KeyUsage struct {
	Day      time.Time
	Caller   string
	Key      string // the key id, "" for entries made before keys existed
	Tool     string // "" for entries of no record
	Currency string
	Calls    int64 // upstream executions whose answer was stored
	// FreeCalls of Calls were of a free tool.
	FreeCalls int64
	Charges   int64
	Charged   int64
	Refunds   int64
	Refunded  int64
	Released  int64 // given back from metered holds: charged, then not spent
}

// Spent is what the key spent: charged, less what came back.
func (u KeyUsage) Spent() int64 { return u.Charged - u.Refunded - u.Released }

// Add adds o's counters to u (the key is u's).
func (u *KeyUsage) Add(o KeyUsage) {
	u.Calls += o.Calls
	u.FreeCalls += o.FreeCalls
	u.Charges += o.Charges
	u.Charged += o.Charged
	u.Refunds += o.Refunds
	u.Refunded += o.Refunded
	u.Released += o.Released
}

// KeyUsageQuery selects one caller's per-key counters whose hour is in
// [From, To), summed per UTC day, key, tool and currency.
type KeyUsageQuery struct {
	Caller   string
	From, To time.Time
}

// KeyStats reads the counters per key.
type KeyStats interface {
	// KeyUsage returns the counters q selects, ordered by day, key, tool
	// and currency. ErrInvalidArgument for no caller or an empty range.
	KeyUsage(ctx context.Context, q KeyUsageQuery) ([]KeyUsage, error)
}

// ValidateKeyUsageQuery checks q for KeyUsage.
func ValidateKeyUsageQuery(q KeyUsageQuery) error {
	if q.Caller == "" || !q.From.Before(q.To) {
		return fmt.Errorf("%w: key usage query: a caller and from before to", ErrInvalidArgument)
	}
	return nil
}
