package memory

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

type capKey struct{ caller, key, currency string }

// spendKey is a cap's window, as the SQL backend's cap_spend.
type spendKey struct {
	capKey
	reset  store.CapReset
	window int64 // Unix ms of its start
}

type spendRow struct{ spent, limitAt int64 }

func windowOf(r store.CapReset, t time.Time) int64 {
	start, _ := r.Window(t)
	return store.UnixMilli(start)
}

// capsOf returns the caps that cover a charge of (caller, currency) with
// key, per-key first. Callers hold s.mu.
func (s *Store) capsOf(caller, currency, key string) []*store.Cap {
	var out []*store.Cap
	for _, k := range []string{key, store.AnyKey} {
		if c, ok := s.caps[capKey{caller, k, currency}]; ok {
			out = append(out, c)
		}
	}
	return out
}

// capPassed returns the first cap a charge of amount would pass at now,
// with its spend, or nil. Callers hold s.mu.
func (s *Store) capPassed(p store.ChargeParams) *store.Cap {
	for _, c := range s.capsOf(p.Caller, p.Currency, p.KeyID) {
		sk := spendKey{capKey{c.Caller, c.Key, c.Currency}, c.Reset, windowOf(c.Reset, p.Now)}
		var spent int64
		if row := s.spend[sk]; row != nil {
			spent = row.spent
		}
		if spent+p.Amount > c.Limit {
			out := *c
			out.Spent = spent
			_, out.ResetsAt = c.Reset.Window(p.Now)
			return &out
		}
	}
	return nil
}

// spendCharge adds a charge entry to its caps' windows, and spendRefund
// takes a refund (or a release) back from its charge's. Callers hold s.mu.
func (s *Store) spendCharge(e entry) {
	for _, c := range s.capsOf(e.Caller, e.Currency, e.keyID) {
		sk := spendKey{capKey{c.Caller, c.Key, c.Currency}, c.Reset, windowOf(c.Reset, e.CreatedAt)}
		row := s.spend[sk]
		if row == nil {
			row = &spendRow{}
			s.spend[sk] = row
		}
		row.limitAt = c.Limit
		row.spent -= e.Amount
	}
}

func (s *Store) spendRefund(e entry) {
	i, ok := s.refs["charge:"+strings.TrimPrefix(e.Reference, e.Kind+":")]
	if !ok {
		return
	}
	ch := s.entries[i]
	for _, c := range s.capsOf(ch.Caller, ch.Currency, ch.keyID) {
		if row := s.spend[spendKey{capKey{c.Caller, c.Key, c.Currency}, c.Reset, windowOf(c.Reset, ch.CreatedAt)}]; row != nil {
			// Never below zero, as the SQL trigger: a window row made after
			// its charge (a cap set across the reset boundary) does not
			// hold it, and the refund must still go through.
			row.spent = max(row.spent-e.Amount, 0)
		}
	}
}

// net is the spend of the charges of k from..to (to zero: no end), less
// their refunds. Callers hold s.mu.
func (s *Store) net(k capKey, from, to int64) int64 {
	var n int64
	for _, e := range s.entries {
		t := store.UnixMilli(e.CreatedAt)
		if e.Kind != store.EntryCharge || e.Caller != k.caller || e.Currency != k.currency ||
			(k.key != store.AnyKey && e.keyID != k.key) || t < from || (to != 0 && t >= to) {
			continue
		}
		n -= e.Amount
		for _, back := range []string{"refund:", "release:"} {
			if i, ok := s.refs[back+strings.TrimPrefix(e.Reference, "charge:")]; ok {
				n -= s.entries[i].Amount
			}
		}
	}
	return n
}

// SetCap implements store.Caps, as the SQL backend.
func (s *Store) SetCap(_ context.Context, p store.SetCapParams) (store.Cap, error) {
	if err := store.ValidateCap(p); err != nil {
		return store.Cap{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := capKey{p.Caller, p.Key, p.Currency}
	s.caps[k] = &store.Cap{Caller: p.Caller, Key: p.Key, Currency: p.Currency, Limit: p.Limit, Reset: p.Reset,
		UpdatedAt: norm(p.Now)}
	for sk := range s.spend {
		if sk.capKey == k && sk.reset != p.Reset {
			delete(s.spend, sk)
		}
	}
	start, end := p.Reset.Window(p.Now)
	to := int64(0)
	if !end.IsZero() {
		to = store.UnixMilli(end)
	}
	n := s.net(k, store.UnixMilli(start), to)
	s.spend[spendKey{k, p.Reset, store.UnixMilli(start)}] = &spendRow{spent: n, limitAt: max(n, p.Limit)}
	return s.readCap(k, p.Now), nil
}

// readCap returns the cap k with its spend at now. Callers hold s.mu.
func (s *Store) readCap(k capKey, now time.Time) store.Cap {
	c := *s.caps[k]
	if row := s.spend[spendKey{k, c.Reset, windowOf(c.Reset, now)}]; row != nil {
		c.Spent = row.spent
	}
	_, c.ResetsAt = c.Reset.Window(now)
	return c
}

// Caps implements store.Caps.
func (s *Store) Caps(_ context.Context, caller string, now time.Time) ([]store.Cap, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []store.Cap{}
	for k := range s.caps {
		if k.caller == caller {
			out = append(out, s.readCap(k, now))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].Currency < out[j].Currency
	})
	return out, nil
}

// DeleteCap implements store.Caps, as the SQL backend: the cap and every
// window of it.
func (s *Store) DeleteCap(_ context.Context, caller, key, currency string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := capKey{caller, key, currency}
	if _, ok := s.caps[k]; !ok {
		return store.ErrNotFound
	}
	delete(s.caps, k)
	for sk := range s.spend {
		if sk.capKey == k {
			delete(s.spend, sk)
		}
	}
	return nil
}

// checkCaps verifies the cap invariant as capInvariantChecks does.
// Callers hold s.mu.
func (s *Store) checkCaps() []error {
	var errs []error
	for sk, row := range s.spend {
		if c := s.caps[sk.capKey]; c == nil || c.Reset != sk.reset {
			errs = append(errs, fmt.Errorf("invariant broken: cap window %v %s %d has no cap", sk.capKey, sk.reset, sk.window))
		}
		to := int64(0)
		if sk.reset != store.ResetNever {
			_, end := sk.reset.Window(store.FromUnixMilli(sk.window))
			to = store.UnixMilli(end)
		}
		if n := s.net(sk.capKey, sk.window, to); n != row.spent {
			errs = append(errs, fmt.Errorf("invariant broken: cap %v window %d spent %d ledger %d", sk.capKey, sk.window, row.spent, n))
		}
		if row.spent > row.limitAt || row.spent < 0 {
			errs = append(errs, fmt.Errorf("invariant broken: cap %v window %d spent %d cap %d", sk.capKey, sk.window, row.spent, row.limitAt))
		}
	}
	return errs
}
