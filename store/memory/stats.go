package memory

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// usageKey is a usage row's key with the hour in Unix ms (time.Time values
// are not reliable map keys).
type usageKey struct {
	hour                   int64
	caller, tool, currency string
}

func keyOf(u store.UsageKey) usageKey {
	return usageKey{store.UnixMilli(store.HourOf(u.Hour)), u.Caller, u.Tool, u.Currency}
}

// tag records whom r belongs to, as the SQL claim's coalesce does.
func (r *record) tag(p store.ClaimParams) {
	if r.tool == "" {
		r.tool = p.Tool
	}
	if r.caller == "" {
		r.caller = p.CallerID
	}
}

// addUsage adds u to its row. Callers hold s.mu.
func (s *Store) addUsage(u store.Usage) {
	if s.usage == nil {
		s.usage = map[usageKey]*store.Usage{}
	}
	k := keyOf(u.UsageKey)
	row, ok := s.usage[k]
	if !ok {
		row = &store.Usage{UsageKey: store.UsageKey{Hour: store.FromUnixMilli(k.hour), Caller: u.Caller, Tool: u.Tool, Currency: u.Currency}}
		s.usage[k] = row
	}
	row.Add(u)
	row.LastAt = norm(row.LastAt)
}

// countEntry is the SQL trigger usage_hourly_from_ledger: money counters
// follow every entry, under its record's tool (credits under ""). Callers
// hold s.mu.
func (s *Store) countEntry(e entry) {
	s.countKeyEntry(e)
	u := store.Usage{UsageKey: store.UsageKey{Hour: e.CreatedAt, Caller: e.Caller, Currency: e.Currency}, LastAt: e.CreatedAt}
	switch e.Kind {
	case store.EntryCharge:
		u.Charges, u.Charged = 1, -e.Amount
	case store.EntryRefund:
		u.Refunds, u.Refunded = 1, e.Amount
	case store.EntryRelease:
		u.Released = e.Amount
	case store.EntryCredit:
		u.Credits, u.Credited = 1, e.Amount
	default:
		return
	}
	if e.Kind != store.EntryCredit {
		if r, ok := s.records[e.Key]; ok {
			u.Tool = r.tool
		}
	}
	s.addUsage(u)
}

// AddUsage implements store.Stats.
func (s *Store) AddUsage(_ context.Context, us []store.Usage) error {
	if err := store.ValidateUsage(us); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range us {
		s.addUsage(u)
	}
	return nil
}

// Usage implements store.Stats.
func (s *Store) Usage(_ context.Context, q store.UsageQuery) ([]store.Usage, error) {
	if err := store.ValidateUsageQuery(q); err != nil {
		return nil, err
	}
	from, to := store.UnixMilli(q.From), store.UnixMilli(q.To)
	s.mu.Lock()
	defer s.mu.Unlock()
	sums := map[usageKey]*store.Usage{}
	for k, row := range s.usage {
		if k.hour < from || k.hour >= to || (q.Caller != "" && k.caller != q.Caller) || (q.Tool != "" && k.tool != q.Tool) {
			continue
		}
		g := usageKey{hour: from, currency: k.currency}
		if q.Bucket > 0 {
			g.hour = k.hour / q.Bucket.Milliseconds() * q.Bucket.Milliseconds()
		}
		if q.ByCaller {
			g.caller = k.caller
		}
		if q.ByTool {
			g.tool = k.tool
		}
		sum, ok := sums[g]
		if !ok {
			sum = &store.Usage{UsageKey: store.UsageKey{Hour: store.FromUnixMilli(g.hour), Caller: g.caller, Tool: g.tool, Currency: g.currency}}
			sums[g] = sum
		}
		sum.Add(*row)
	}
	out := make([]store.Usage, 0, len(sums))
	for _, u := range sums {
		out = append(out, *u)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Hour.Equal(b.Hour) {
			return a.Hour.Before(b.Hour)
		}
		if a.Caller != b.Caller {
			return a.Caller < b.Caller
		}
		if a.Tool != b.Tool {
			return a.Tool < b.Tool
		}
		return a.Currency < b.Currency
	})
	return out, nil
}

// Calls implements store.Stats.
func (s *Store) Calls(_ context.Context, q store.CallQuery) ([]store.CallSummary, error) {
	if err := store.ValidateCallQuery(q); err != nil {
		return nil, err
	}
	stuck := norm(q.StuckAt)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.CallSummary
	for _, r := range s.records {
		if (q.Status != "" && r.Status != q.Status) || (q.Tool != "" && r.tool != q.Tool) || (q.Caller != "" && r.caller != q.Caller) {
			continue
		}
		if !q.StuckAt.IsZero() && (r.Status != store.StatusInProgress || r.LeaseExpiresAt.After(stuck)) {
			continue
		}
		out = append(out, store.CallSummary{Record: clone(r.Record), Tool: r.tool, Caller: r.caller})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].UpdatedAt.Equal(out[j].UpdatedAt) {
			return out[i].UpdatedAt.After(out[j].UpdatedAt)
		}
		return out[i].Key < out[j].Key
	})
	if len(out) > q.Limit {
		out = out[:q.Limit]
	}
	index := map[string]int{}
	for i, c := range out {
		index[c.Key] = i
	}
	for _, e := range s.entries {
		if i, ok := index[e.Key]; ok && e.Key != "" {
			out[i].Entries = append(out[i].Entries, e.Entry)
		}
	}
	if out == nil {
		out = []store.CallSummary{}
	}
	return out, nil
}

// CallerSummaries implements store.Stats.
func (s *Store) CallerSummaries(_ context.Context, limit int) ([]store.CallerSummary, error) {
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("%w: caller limit must be 1..1000", store.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.callers))
	for id := range s.callers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([]store.CallerSummary, 0, len(ids))
	for _, id := range ids {
		c := s.callers[id]
		c.KeyHash = nil
		cs := store.CallerSummary{Caller: c}
		for bk, bal := range s.balances {
			if bk.caller == id {
				cs.Balances = append(cs.Balances, store.CallerBalance{Currency: bk.currency, Balance: bal, Owed: s.owed[bk]})
			}
		}
		sort.Slice(cs.Balances, func(i, j int) bool { return cs.Balances[i].Currency < cs.Balances[j].Currency })
		for k, row := range s.usage {
			if k.caller == id && row.LastAt.After(cs.LastSeen) {
				cs.LastSeen = row.LastAt
			}
		}
		out = append(out, cs)
	}
	return out, nil
}

// SweepUsage implements store.Stats.
func (s *Store) SweepUsage(_ context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: sweep limit %d", store.ErrInvalidArgument, limit)
	}
	b := store.UnixMilli(before)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k := range s.usage {
		if n == limit {
			break
		}
		if k.hour < b {
			delete(s.usage, k)
			n++
		}
	}
	for k := range s.keyUsage {
		if n == limit {
			break
		}
		if k.hour < b {
			delete(s.keyUsage, k)
			n++
		}
	}
	return n, nil
}

// CheckUsage implements store.Stats.
func (s *Store) CheckUsage(_ context.Context) error {
	type hk struct {
		hour             int64
		caller, currency string
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	usage, ledger := map[hk]*store.Usage{}, map[hk]*store.Usage{}
	oldest := int64(-1)
	for k, row := range s.usage {
		h := hk{k.hour, k.caller, k.currency}
		if usage[h] == nil {
			usage[h] = &store.Usage{}
		}
		usage[h].Add(store.Usage{Charges: row.Charges, Charged: row.Charged, Refunds: row.Refunds,
			Refunded: row.Refunded, Released: row.Released, Credits: row.Credits, Credited: row.Credited})
		if oldest < 0 || k.hour < oldest {
			oldest = k.hour
		}
	}
	for _, e := range s.entries {
		h := hk{store.UnixMilli(store.HourOf(e.CreatedAt)), e.Caller, e.Currency}
		u := store.Usage{}
		switch e.Kind {
		case store.EntryCharge:
			u.Charges, u.Charged = 1, -e.Amount
		case store.EntryRefund:
			u.Refunds, u.Refunded = 1, e.Amount
		case store.EntryRelease:
			u.Released = e.Amount
		case store.EntryCredit:
			u.Credits, u.Credited = 1, e.Amount
		default:
			continue
		}
		if ledger[h] == nil {
			ledger[h] = &store.Usage{}
		}
		ledger[h].Add(u)
	}
	money := func(u *store.Usage) [7]int64 {
		if u == nil {
			return [7]int64{}
		}
		return [7]int64{u.Charges, u.Charged, u.Refunds, u.Refunded, u.Released, u.Credits, u.Credited}
	}
	for h, u := range usage {
		if money(u) != money(ledger[h]) {
			return fmt.Errorf("usage invariant broken: %s/%s at %d: usage %v ledger %v", h.caller, h.currency, h.hour, money(u), money(ledger[h]))
		}
	}
	for h := range ledger {
		if oldest >= 0 && h.hour >= oldest && usage[h] == nil {
			return fmt.Errorf("usage invariant broken: %s/%s at %d: ledger entries without usage", h.caller, h.currency, h.hour)
		}
	}
	return s.checkKeyUsage()
}
