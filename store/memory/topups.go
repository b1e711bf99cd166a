package memory

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// CreateTopup implements store.Topups.
func (s *Store) CreateTopup(_ context.Context, t store.Topup) (store.Topup, bool, error) {
	if err := store.ValidateTopup(t); err != nil {
		return store.Topup{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.topupKeys[topupKey{t.Caller, t.Key}]; ok {
		got := s.topups[topupKey{t.Caller, id}]
		if got.Fingerprint != t.Fingerprint {
			return store.Topup{}, false, store.ErrFingerprintMismatch
		}
		return *got, false, nil
	}
	if _, ok := s.topups[topupKey{t.Caller, t.ID}]; ok {
		return store.Topup{}, false, fmt.Errorf("%w: top-up id %s is taken", store.ErrConflict, t.ID)
	}
	now := norm(t.CreatedAt)
	stored := store.Topup{Caller: t.Caller, ID: t.ID, Rail: t.Rail, Key: t.Key, Fingerprint: t.Fingerprint,
		Amount: t.Amount, Currency: t.Currency, Status: store.TopupPending, CreatedAt: now, UpdatedAt: now}
	s.topups[topupKey{t.Caller, t.ID}] = &stored
	s.topupKeys[topupKey{t.Caller, t.Key}] = t.ID
	return stored, true, nil
}

// OpenTopup implements store.Topups.
func (s *Store) OpenTopup(_ context.Context, caller, id, sessionID, url string, now time.Time) (store.Topup, error) {
	if sessionID == "" {
		return store.Topup{}, fmt.Errorf("%w: session id is required", store.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.topups[topupKey{caller, id}]
	if !ok {
		return store.Topup{}, store.ErrNotFound
	}
	if t.SessionID != "" && t.SessionID != sessionID {
		return store.Topup{}, fmt.Errorf("%w: top-up %s has session %s", store.ErrConflict, id, t.SessionID)
	}
	if t.SessionID == "" || t.Status == store.TopupPending {
		t.UpdatedAt = norm(now)
	}
	t.SessionID = sessionID
	if t.URL == "" {
		t.URL = url
	}
	if t.Status == store.TopupPending {
		t.Status = store.TopupOpen
	}
	s.route(t)
	return *t, nil
}

// route records t's session and payment in the routing index; the first
// top-up to record a ref keeps it. Callers hold s.mu.
func (s *Store) route(t *store.Topup) {
	for _, ref := range []string{t.SessionID, t.PaymentIntent} {
		if _, ok := s.routes[routeKey{t.Rail, ref}]; ref != "" && !ok {
			s.routes[routeKey{t.Rail, ref}] = topupKey{t.Caller, t.ID}
		}
	}
}

// Topup implements store.Topups.
func (s *Store) Topup(_ context.Context, caller, id string) (store.Topup, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.topups[topupKey{caller, id}]
	if !ok {
		return store.Topup{}, store.ErrNotFound
	}
	return *t, nil
}

// TopupByPayment implements store.Topups.
func (s *Store) TopupByPayment(_ context.Context, rail, ref string) (store.Topup, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.routes[routeKey{rail, ref}]
	if !ok {
		return store.Topup{}, store.ErrNotFound
	}
	return *s.topups[k], nil
}

// Debt implements store.Topups.
func (s *Store) Debt(_ context.Context, caller, currency string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owed[balanceKey{caller, currency}], nil
}

// ApplyTopupEvent implements store.Topups with the SQL backend's rules and
// entries, under the store's lock.
func (s *Store) ApplyTopupEvent(_ context.Context, ev store.TopupEvent) (store.TopupEventResult, error) {
	if err := store.ValidateTopupEvent(ev); err != nil {
		return store.TopupEventResult{}, err
	}
	now := norm(ev.Now)
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.topups[topupKey{ev.Caller, ev.TopupID}]
	if !ok {
		return store.TopupEventResult{}, store.ErrNotFound
	}
	ek := eventKey{ev.Caller, ev.Rail, ev.EventID}
	if s.events[ek] {
		return s.topupResult(t, ev, store.TopupEventResult{Duplicate: true}), nil
	}
	switch {
	case t.Rail != ev.Rail:
		return store.TopupEventResult{}, fmt.Errorf("%w: top-up %s is on rail %s", store.ErrConflict, t.ID, t.Rail)
	case ev.Kind.SessionKind() && t.SessionID != "" && t.SessionID != ev.SessionID:
		return store.TopupEventResult{}, fmt.Errorf("%w: top-up %s has session %s", store.ErrConflict, t.ID, t.SessionID)
	case !ev.Kind.SessionKind() && topupCurrency(t) != ev.Currency:
		return store.TopupEventResult{}, fmt.Errorf("%w: top-up %s is in %s, the event in %s", store.ErrConflict,
			t.ID, t.Currency, ev.Currency)
	}
	var res store.TopupEventResult
	switch ev.Kind {
	case store.TopupEventPaid:
		ref := store.TopupCreditReference(ev.Rail, ev.SessionID)
		if _, ok := s.refs[ref]; !ok {
			if s.balances[balanceKey{ev.Caller, ev.Currency}] > store.MaxAmount-ev.Amount {
				return store.TopupEventResult{}, fmt.Errorf("%w: balance would exceed %d", store.ErrInvalidAmount, store.MaxAmount)
			}
			s.post(entry{Entry: store.Entry{Caller: ev.Caller, Currency: ev.Currency, Amount: ev.Amount, Kind: store.EntryCredit,
				Reference: ref, Topup: t.ID, CreatedAt: now}})
			res.Credited = ev.Amount
		}
		if e := s.entries[s.refs[ref]]; e.Caller == t.Caller && e.Topup == t.ID && e.Kind == store.EntryCredit {
			if t.Credited == 0 {
				res.Repaid = s.repay(t.Caller, e.Currency, ref, now)
			}
			t.Credited, t.CreditedCurrency = e.Amount, e.Currency
			if t.Status != store.TopupRefunded {
				t.Status = store.TopupCredited
			}
			t.SessionID = ev.SessionID
			if ev.PaymentIntent != "" {
				t.PaymentIntent = ev.PaymentIntent
			}
			t.UpdatedAt = now
		}
	case store.TopupEventProcessing, store.TopupEventFailed, store.TopupEventExpired:
		to, from := store.TopupProcessing, []store.TopupStatus{store.TopupPending, store.TopupOpen}
		if ev.Kind != store.TopupEventProcessing {
			to, from = store.TopupFailed, append(from, store.TopupProcessing)
			if ev.Kind == store.TopupEventExpired {
				to = store.TopupExpired
			}
		}
		for _, f := range from {
			if t.Status == f {
				t.Status = to
			}
		}
		t.SessionID = ev.SessionID
		if ev.PaymentIntent != "" {
			t.PaymentIntent = ev.PaymentIntent
		}
		t.UpdatedAt = now
	case store.TopupEventRefunded, store.TopupEventDisputed:
		k := topupKey{t.Caller, t.ID}
		if s.asks[k] == nil {
			s.asks[k] = map[string]ask{}
		}
		old, seen := s.asks[k][ev.Source]
		switch {
		case !seen:
			s.asks[k][ev.Source] = ask{dispute: ev.Kind == store.TopupEventDisputed, amount: ev.Amount}
		case !old.dispute && ev.Kind == store.TopupEventRefunded && ev.Amount > old.amount:
			s.asks[k][ev.Source] = ask{amount: ev.Amount}
		}
	}
	if ev.Kind.SessionKind() {
		s.route(t)
		s.unpark(t)
	}
	if ev.Kind == store.TopupEventPaid || !ev.Kind.SessionKind() {
		res.Taken, res.Owed = s.reverse(t, now)
	}
	s.events[ek] = true
	return s.topupResult(t, ev, res), nil
}

// parkedAsk is a refund or dispute parked for a payment (ParkTopupEvent).
type parkedAsk struct {
	ask
	currency string
}

// ParkTopupEvent implements store.Topups.
func (s *Store) ParkTopupEvent(_ context.Context, ev store.TopupEvent) error {
	if ev.Kind != store.TopupEventRefunded && ev.Kind != store.TopupEventDisputed {
		return fmt.Errorf("%w: only refunds and disputes are parked", store.ErrInvalidArgument)
	}
	if ev.Rail == "" || ev.PaymentIntent == "" || ev.Source == "" {
		return fmt.Errorf("%w: rail, payment and source are required", store.ErrInvalidArgument)
	}
	if err := store.ValidateAmount(ev.Amount, ev.Currency); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rk := routeKey{ev.Rail, ev.PaymentIntent}
	if s.parked[rk] == nil {
		s.parked[rk] = map[string]parkedAsk{}
	}
	old, seen := s.parked[rk][ev.Source]
	switch {
	case !seen:
		s.parked[rk][ev.Source] = parkedAsk{ask{dispute: ev.Kind == store.TopupEventDisputed, amount: ev.Amount}, ev.Currency}
	case !old.dispute && ev.Kind == store.TopupEventRefunded && ev.Amount > old.amount:
		old.amount = ev.Amount
		s.parked[rk][ev.Source] = old
	}
	return nil
}

// unpark asks back, for t, what was parked for the payment it records, in
// its currency, as the SQL backend's topupUnparkSQL does. Callers hold s.mu.
func (s *Store) unpark(t *store.Topup) {
	if t.PaymentIntent == "" {
		return
	}
	k := topupKey{t.Caller, t.ID}
	for source, p := range s.parked[routeKey{t.Rail, t.PaymentIntent}] {
		if p.currency != topupCurrency(t) {
			continue
		}
		if s.asks[k] == nil {
			s.asks[k] = map[string]ask{}
		}
		old, seen := s.asks[k][source]
		if !seen || (!old.dispute && !p.dispute && p.amount > old.amount) {
			s.asks[k][source] = p.ask
		}
	}
}

// topupCurrency is the currency of what t credited, or of what it asked.
func topupCurrency(t *store.Topup) string {
	if t.CreditedCurrency != "" {
		return t.CreditedCurrency
	}
	return t.Currency
}

// topupResult fills in res's top-up, balance and debt. Callers hold s.mu.
func (s *Store) topupResult(t *store.Topup, ev store.TopupEvent, res store.TopupEventResult) store.TopupEventResult {
	cur := ev.Currency
	if cur == "" {
		cur = topupCurrency(t)
	}
	res.Topup = *t
	res.Balance, res.Debt = s.balances[balanceKey{t.Caller, cur}], s.owed[balanceKey{t.Caller, cur}]
	return res
}

// repay pays the caller's debt in currency from its balance after the
// credit ref, once, and returns what it paid. Callers hold s.mu.
func (s *Store) repay(caller, currency, ref string, now time.Time) int64 {
	bk := balanceKey{caller, currency}
	paid := min(s.owed[bk], s.balances[bk])
	if _, done := s.refs["repay:"+ref]; paid <= 0 || done {
		return 0
	}
	s.post(entry{Entry: store.Entry{Caller: caller, Currency: currency, Amount: -paid, Owed: -paid, Kind: store.EntryRepay,
		Reference: "repay:" + ref, CreatedAt: now}})
	return paid
}

// reverse takes back what t's refunds and disputes ask beyond what was
// reversed, capped at its credit: from the balance as far as it goes, the
// rest as owed. It returns both parts. Callers hold s.mu.
func (s *Store) reverse(t *store.Topup, now time.Time) (taken, owed int64) {
	var asked int64
	for _, a := range s.asks[topupKey{t.Caller, t.ID}] {
		asked += a.amount
	}
	target := min(t.Credited, asked)
	delta := target - t.Reversed
	if delta <= 0 {
		return 0, 0
	}
	ref := "reversal:" + t.Caller + ":" + t.ID + ":" + strconv.FormatInt(target, 10)
	if _, done := s.refs[ref]; done {
		return 0, 0
	}
	taken = min(delta, s.balances[balanceKey{t.Caller, t.CreditedCurrency}])
	s.post(entry{Entry: store.Entry{Caller: t.Caller, Currency: t.CreditedCurrency, Amount: -taken, Owed: delta - taken,
		Kind: store.EntryReversal, Reference: ref, Topup: t.ID, CreatedAt: now}})
	t.Reversed, t.Status, t.UpdatedAt = target, store.TopupRefunded, now
	return taken, delta - taken
}

// checkFunding verifies the funding invariant (7-11 of store.Topups), as
// the SQL backend's checks do. Callers hold s.mu.
func (s *Store) checkFunding() []error {
	var errs []error
	owed := map[balanceKey]int64{}
	type sums struct {
		credits, credited, reversed int64
		creditCur, creditRef        string
	}
	per := map[topupKey]*sums{}
	for _, e := range s.entries {
		bk := balanceKey{e.Caller, e.Currency}
		owed[bk] += e.Owed
		if owed[bk] < 0 {
			errs = append(errs, fmt.Errorf("invariant broken: %s: owed running %d", e.Reference, owed[bk]))
		}
		if e.Kind == store.EntryCharge && owed[bk] > 0 {
			errs = append(errs, fmt.Errorf("invariant broken: %s: charged while owing %d", e.Reference, owed[bk]))
		}
		if e.Kind == store.EntryRepay && (e.Amount >= 0 || e.Owed != e.Amount) {
			errs = append(errs, fmt.Errorf("invariant broken: repayment %s amount %d owed %d", e.Reference, e.Amount, e.Owed))
		}
		if e.Topup == "" && e.Kind != store.EntryReversal {
			continue
		}
		k := topupKey{e.Caller, e.Topup}
		if s.topups[k] == nil {
			errs = append(errs, fmt.Errorf("invariant broken: %s names no top-up", e.Reference))
			continue
		}
		if per[k] == nil {
			per[k] = &sums{}
		}
		switch e.Kind {
		case store.EntryCredit:
			per[k].credits++
			per[k].credited += e.Amount
			per[k].creditCur, per[k].creditRef = e.Currency, e.Reference
		case store.EntryReversal:
			per[k].reversed += e.Owed - e.Amount
		}
	}
	for bk, o := range s.owed {
		if o != owed[bk] || o < 0 {
			errs = append(errs, fmt.Errorf("invariant broken: %s/%s owed %d entries %d", bk.caller, bk.currency, o, owed[bk]))
		}
	}
	keys := make([]topupKey, 0, len(s.topups))
	for k := range s.topups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].caller+"/"+keys[i].id < keys[j].caller+"/"+keys[j].id })
	for _, k := range keys {
		t, got := s.topups[k], per[k]
		if got == nil {
			got = &sums{}
		}
		if got.credits > 1 || t.Credited != got.credited ||
			(got.credits == 1 && (t.CreditedCurrency != got.creditCur || got.creditRef != store.TopupCreditReference(t.Rail, t.SessionID))) {
			errs = append(errs, fmt.Errorf("invariant broken: top-up %s/%s credited %d, %d credit entries of %d",
				k.caller, k.id, t.Credited, got.credits, got.credited))
		}
		var asked int64
		for _, a := range s.asks[k] {
			asked += a.amount
		}
		if t.Reversed > asked {
			errs = append(errs, fmt.Errorf("invariant broken: top-up %s/%s reversed %d asked %d", k.caller, k.id, t.Reversed, asked))
		}
		if t.Reversed != got.reversed || t.Reversed > t.Credited {
			errs = append(errs, fmt.Errorf("invariant broken: top-up %s/%s reversed %d credited %d entries %d",
				k.caller, k.id, t.Reversed, t.Credited, got.reversed))
		}
		credited := t.Status == store.TopupCredited || t.Status == store.TopupRefunded
		if credited != (t.Credited > 0) || (t.Status == store.TopupRefunded) != (t.Reversed > 0) {
			errs = append(errs, fmt.Errorf("invariant broken: top-up %s/%s %s credited %d reversed %d",
				k.caller, k.id, t.Status, t.Credited, t.Reversed))
		}
	}
	return errs
}
