package memory

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/toolgate/toolgate-go/store"
)

// keyUsageKey is a per-key usage row's key (SQL's usage_keys_hourly).
type keyUsageKey struct {
	caller              string
	hour                int64
	key, tool, currency string
}

// keyMoney is an entry's counters per key: a charge under its key, a
// refund or a release (the metered price's "release") under its charge's,
// as the SQL trigger usage_keys_hourly_from_ledger. ok is false for the
// entries that are not spend. Callers hold s.mu.
func (s *Store) keyMoney(e entry) (key string, u store.KeyUsage, ok bool) {
	key = e.keyID
	switch e.Kind {
	case store.EntryCharge:
		return key, store.KeyUsage{Charges: 1, Charged: -e.Amount}, true
	case store.EntryRefund:
		u = store.KeyUsage{Refunds: 1, Refunded: e.Amount}
	case "release":
		u = store.KeyUsage{Released: e.Amount}
	default:
		return "", u, false
	}
	_, suffix, _ := strings.Cut(e.Reference, ":")
	if i, found := s.refs["charge:"+suffix]; found {
		key = s.entries[i].keyID
	}
	return key, u, true
}

// addKeyUsage adds u to the row of (caller, hour, key, tool, currency).
// Callers hold s.mu.
func (s *Store) addKeyUsage(k keyUsageKey, u store.KeyUsage) {
	if s.keyUsage == nil {
		s.keyUsage = map[keyUsageKey]*store.KeyUsage{}
	}
	row, ok := s.keyUsage[k]
	if !ok {
		row = &store.KeyUsage{}
		s.keyUsage[k] = row
	}
	row.Add(u)
}

// countKeyEntry counts e's money under its key and its record's tool.
// Callers hold s.mu.
func (s *Store) countKeyEntry(e entry) {
	key, u, ok := s.keyMoney(e)
	if !ok {
		return
	}
	tool := ""
	if r, found := s.records[e.Key]; found {
		tool = r.tool
	}
	s.addKeyUsage(keyUsageKey{e.Caller, store.UnixMilli(store.HourOf(e.CreatedAt)), key, tool, e.Currency}, u)
}

// addKeyCalls counts an executed call's calls under u.Key, with its
// Complete. Callers hold s.mu.
func (s *Store) addKeyCalls(u store.Usage) {
	s.addKeyUsage(keyUsageKey{u.Caller, store.UnixMilli(store.HourOf(u.Hour)), u.Key, u.Tool, u.Currency},
		store.KeyUsage{Calls: u.Calls, FreeCalls: u.FreeCalls})
}

// KeyUsage implements store.KeyStats.
func (s *Store) KeyUsage(_ context.Context, q store.KeyUsageQuery) ([]store.KeyUsage, error) {
	if err := store.ValidateKeyUsageQuery(q); err != nil {
		return nil, err
	}
	const day = 86400000
	from, to := store.UnixMilli(q.From), store.UnixMilli(q.To)
	s.mu.Lock()
	defer s.mu.Unlock()
	sums := map[keyUsageKey]*store.KeyUsage{}
	for k, row := range s.keyUsage {
		if k.caller != q.Caller || k.hour < from || k.hour >= to {
			continue
		}
		g := k
		g.hour = k.hour / day * day
		sum, ok := sums[g]
		if !ok {
			sum = &store.KeyUsage{Day: store.FromUnixMilli(g.hour), Caller: g.caller, Key: g.key, Tool: g.tool, Currency: g.currency}
			sums[g] = sum
		}
		sum.Add(*row)
	}
	out := make([]store.KeyUsage, 0, len(sums))
	for _, u := range sums {
		out = append(out, *u)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Day.Equal(b.Day) {
			return a.Day.Before(b.Day)
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		if a.Tool != b.Tool {
			return a.Tool < b.Tool
		}
		return a.Currency < b.Currency
	})
	return out, nil
}

// checkKeyUsage is CheckUsage per key. Callers hold s.mu.
func (s *Store) checkKeyUsage() error {
	type hk struct {
		caller        string
		hour          int64
		key, currency string
	}
	money := func(u *store.KeyUsage) [5]int64 {
		if u == nil {
			return [5]int64{}
		}
		return [5]int64{u.Charges, u.Charged, u.Refunds, u.Refunded, u.Released}
	}
	usage, ledger := map[hk]*store.KeyUsage{}, map[hk]*store.KeyUsage{}
	oldest := int64(-1)
	for k, row := range s.keyUsage {
		h := hk{k.caller, k.hour, k.key, k.currency}
		if usage[h] == nil {
			usage[h] = &store.KeyUsage{}
		}
		m := money(row)
		usage[h].Add(store.KeyUsage{Charges: m[0], Charged: m[1], Refunds: m[2], Refunded: m[3], Released: m[4]})
		if oldest < 0 || k.hour < oldest {
			oldest = k.hour
		}
	}
	for _, e := range s.entries {
		key, u, ok := s.keyMoney(e)
		if !ok {
			continue
		}
		h := hk{e.Caller, store.UnixMilli(store.HourOf(e.CreatedAt)), key, e.Currency}
		if ledger[h] == nil {
			ledger[h] = &store.KeyUsage{}
		}
		ledger[h].Add(u)
	}
	for h, u := range usage {
		if money(u) != money(ledger[h]) {
			return fmt.Errorf("usage invariant per key broken: %s/%s/%s at %d: usage %v ledger %v",
				h.caller, h.key, h.currency, h.hour, money(u), money(ledger[h]))
		}
	}
	for h := range ledger {
		if oldest >= 0 && h.hour >= oldest && usage[h] == nil {
			return fmt.Errorf("usage invariant per key broken: %s/%s/%s at %d: ledger entries without usage",
				h.caller, h.key, h.currency, h.hour)
		}
	}
	return nil
}
