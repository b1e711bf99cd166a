package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// ErrKeyNotFound means an admin request named a key the caller does not
// have (or a caller that does not exist).
var ErrKeyNotFound = errors.New("key not found")

// MaxKeyNameLen bounds a key's name, in bytes.
const MaxKeyNameLen = 200

// CreateKey gives the caller a new key named name and returns it with its
// secret, which exists only in this answer (the store keeps its SHA-256).
// It returns ErrUnknownCaller for a caller that does not exist,
// store.ErrTooManyKeys (wrapped) for one that holds
// store.MaxKeysPerCaller valid keys, creating nothing, and a *StoreError
// when the store fails.
func (e *Engine) CreateKey(ctx context.Context, callerID, name string) (store.CallerKey, string, error) {
	id, err := e.newID("k_")
	if err != nil {
		return store.CallerKey{}, "", err
	}
	secret, err := newCallerKey(e.rand)
	if err != nil {
		return store.CallerKey{}, "", err
	}
	k := store.CallerKey{Caller: callerID, ID: id, Name: name, KeyHash: HashKey(secret),
		CreatedAt: store.FromUnixMilli(store.UnixMilli(e.now()))}
	err = e.store.CreateKey(ctx, k)
	if errors.Is(err, store.ErrNotFound) {
		return store.CallerKey{}, "", fmt.Errorf("%w: %q", ErrUnknownCaller, callerID)
	}
	if err != nil {
		return store.CallerKey{}, "", storeError("create key", err)
	}
	return k, secret, nil
}

// Keys returns the caller's keys, oldest first. It returns
// ErrUnknownCaller for a caller that does not exist and a *StoreError when
// the store fails.
func (e *Engine) Keys(ctx context.Context, callerID string) ([]store.CallerKey, error) {
	keys, err := e.store.Keys(ctx, callerID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCaller, callerID)
	}
	if err != nil {
		return nil, storeError("list keys", err)
	}
	return keys, nil
}

// RevokeKey revokes the caller's key keyID (again: a no-op) and returns it.
// The key stops at once on this engine and within CallerCacheTTL on
// others. It returns ErrKeyNotFound and a *StoreError when the store fails.
func (e *Engine) RevokeKey(ctx context.Context, callerID, keyID string) (store.CallerKey, error) {
	k, err := e.store.RevokeKey(ctx, callerID, keyID, e.now())
	if errors.Is(err, store.ErrNotFound) {
		return store.CallerKey{}, fmt.Errorf("%w: %q", ErrKeyNotFound, keyID)
	}
	if err != nil {
		return store.CallerKey{}, storeError("revoke key", err)
	}
	e.callers.forget(callerID, keyID)
	return k, nil
}

// RotateKey gives the caller's key keyID a new secret and returns the key
// and the secret. The id stays, so what is kept per key goes on; the old
// secret stops as a revoked key does (see RevokeKey). It returns
// ErrKeyNotFound, store.ErrRevoked (wrapped) for a revoked key, and a
// *StoreError when the store fails.
func (e *Engine) RotateKey(ctx context.Context, callerID, keyID string) (store.CallerKey, string, error) {
	secret, err := newCallerKey(e.rand)
	if err != nil {
		return store.CallerKey{}, "", err
	}
	k, err := e.store.RotateKey(ctx, callerID, keyID, HashKey(secret))
	if errors.Is(err, store.ErrNotFound) {
		return store.CallerKey{}, "", fmt.Errorf("%w: %q", ErrKeyNotFound, keyID)
	}
	if err != nil {
		return store.CallerKey{}, "", storeError("rotate key", err)
	}
	e.callers.forget(callerID, keyID)
	return k, secret, nil
}

// UsagePeriods are the windows of CallerUsage, in its order.
var UsagePeriods = [...]string{"day", "week", "month"}

// UsageWindow is a caller's usage in one UTC window [From, To): the
// current day, ISO week (from Monday) or month.
type UsageWindow struct {
	Period   string
	From, To time.Time
	// Tools has one row per tool and currency with any calls or money in
	// the window, ordered by tool and currency.
	Tools []store.Usage
}

// CallerUsage returns the caller's usage per tool in the current UTC day,
// week and month, read from the usage counters (store.Stats) in one
// query: the money counters equal the ledger's charge and refund entries
// of those hours, and Calls counts executed calls. The caller is not
// checked. It returns a *StoreError when the store fails.
func (e *Engine) CallerUsage(ctx context.Context, callerID string) ([]UsageWindow, error) {
	wins, from := usageWindows(e.now())
	rows, err := e.store.Usage(ctx, store.UsageQuery{From: from, To: wins[0].To, Bucket: 24 * time.Hour,
		Caller: callerID, ByTool: true})
	if err != nil {
		return nil, storeError("read usage", err)
	}
	for i := range wins {
		w := &wins[i]
		index := map[[2]string]int{}
		for _, r := range rows {
			if r.Tool == "" || r.Hour.Before(w.From) || !r.Hour.Before(w.To) {
				continue // credits, or another window
			}
			k := [2]string{r.Tool, r.Currency}
			j, ok := index[k]
			if !ok {
				j = len(w.Tools)
				index[k] = j
				w.Tools = append(w.Tools, store.Usage{UsageKey: store.UsageKey{Hour: w.From, Caller: callerID,
					Tool: r.Tool, Currency: r.Currency}})
			}
			w.Tools[j].Add(r)
		}
		slices.SortFunc(w.Tools, func(a, b store.Usage) int {
			return cmp.Or(strings.Compare(a.Tool, b.Tool), strings.Compare(a.Currency, b.Currency))
		})
	}
	return wins, nil
}

// usageWindows returns the current UTC day, week and month at now (in
// UsagePeriods' order, without rows) and the earliest of their starts.
func usageWindows(now time.Time) ([]UsageWindow, time.Time) {
	now = now.UTC()
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	week := day.AddDate(0, 0, -(int(day.Weekday())+6)%7)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	wins := []UsageWindow{
		{Period: UsagePeriods[0], From: day, To: day.AddDate(0, 0, 1)},
		{Period: UsagePeriods[1], From: week, To: week.AddDate(0, 0, 7)},
		{Period: UsagePeriods[2], From: month, To: month.AddDate(0, 1, 0)},
	}
	if month.Before(week) {
		return wins, month
	}
	return wins, week
}

// KeyUsage is one of a caller's keys with its usage in the windows of
// CallerUsage.
type KeyUsage struct {
	Key     store.CallerKey
	Windows []KeyUsageWindow
}

// KeyUsageWindow is a key's usage in one window (see UsageWindow).
type KeyUsageWindow struct {
	Period   string
	From, To time.Time
	// Tools has one row per tool and currency with any calls or money of
	// the key in the window, ordered by tool and currency.
	Tools []store.KeyUsage
}

// CallerKeyUsage returns the caller's keys, oldest first, each with its
// calls and spend per tool in the current UTC day, week and month, read
// from the counters per key (store.KeyStats) in one query: their money
// equals the ledger's entries of the key (a refund's or a release's under
// its charge's key). Entries made before the caller had keys ("" in the
// ledger) count under its original key, which was then its only one. It
// returns ErrUnknownCaller, or a *StoreError when the store fails.
func (e *Engine) CallerKeyUsage(ctx context.Context, callerID string) ([]KeyUsage, error) {
	keys, err := e.Keys(ctx, callerID)
	if err != nil {
		return nil, err
	}
	wins, from := usageWindows(e.now())
	rows, err := e.store.KeyUsage(ctx, store.KeyUsageQuery{Caller: callerID, From: from, To: wins[0].To})
	if err != nil {
		return nil, storeError("read key usage", err)
	}
	out := make([]KeyUsage, 0, len(keys))
	for _, k := range keys {
		ku := KeyUsage{Key: k, Windows: make([]KeyUsageWindow, 0, len(wins))}
		for _, w := range wins {
			kw := KeyUsageWindow{Period: w.Period, From: w.From, To: w.To}
			index := map[[2]string]int{}
			for _, r := range rows {
				id := cmp.Or(r.Key, store.OriginalKeyID)
				if id != k.ID || r.Day.Before(w.From) || !r.Day.Before(w.To) {
					continue
				}
				t := [2]string{r.Tool, r.Currency}
				j, ok := index[t]
				if !ok {
					j = len(kw.Tools)
					index[t] = j
					kw.Tools = append(kw.Tools, store.KeyUsage{Day: w.From, Caller: callerID, Key: k.ID,
						Tool: r.Tool, Currency: r.Currency})
				}
				kw.Tools[j].Add(r)
			}
			// sort.Slice, not slices.SortFunc: no sort instantiated for one
			// more element type in the wasm.
			sort.Slice(kw.Tools, func(i, j int) bool {
				a, b := kw.Tools[i], kw.Tools[j]
				return a.Tool < b.Tool || (a.Tool == b.Tool && a.Currency < b.Currency)
			})
			ku.Windows = append(ku.Windows, kw)
		}
		out = append(out, ku)
	}
	return out, nil
}
