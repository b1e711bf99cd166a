// Package memory implements store.Store in process memory, for tests and
// single-process use. One mutex makes every operation atomic; the rules are
// the SQL backend's, written in Go.
package memory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// Store is an in-memory store.Store. The zero value is not usable; call New.
type Store struct {
	// MaxResponseBytes limits stored response bodies; zero means
	// store.DefaultMaxResponseBytes.
	MaxResponseBytes int

	mu       sync.Mutex
	records  map[string]*record
	balances map[balanceKey]int64
	entries  []entry
	refs     map[string]int // reference -> index in entries
	callers  map[string]store.Caller
	keys     []store.CallerKey               // every caller's keys, oldest first (see keys.go)
	usage    map[usageKey]*store.Usage       // see stats.go
	keyUsage map[keyUsageKey]*store.KeyUsage // see keyusage.go
	owed     map[balanceKey]int64

	topups    map[topupKey]*store.Topup
	topupKeys map[topupKey]string // (caller, idempotency key) -> top-up id
	events    map[eventKey]bool
	asks      map[topupKey]map[string]ask // what each refund or dispute source asks back
	routes    map[routeKey]topupKey
	parked    map[routeKey]map[string]parkedAsk // asks that came before their payment was routed

	payments    map[payKey]*payment
	paymentKeys map[keyRef]payKey // (idempotency key, ref) -> payment
	paymentSeq  int64

	quotaUsed    map[quotaKey]int64 // see quota.go
	quotaEntries []quotaEntry

	caps  map[capKey]*store.Cap // see caps.go
	spend map[spendKey]*spendRow
}

type topupKey struct{ caller, id string }

type eventKey struct{ caller, rail, id string }

type routeKey struct{ rail, ref string }

// ask is what one refund (its running total) or dispute asks back.
type ask struct {
	dispute bool
	amount  int64
}

type record struct {
	store.Record
	incarnation  string
	tool, caller string   // ClaimParams.Tool and CallerID
	quotaAt      quotaKey // the window of the unit taken last
	quotaCount   int64
	capture      *int64 // what the Complete that captured the hold asked for (nil: all)
}

type entry struct {
	store.Entry
	incarnation string
	keyID       string // the caller's key a charge (or a release) was made with
	hold        bool   // a charge that is a metered price's hold
}

type balanceKey struct{ caller, currency string }

var _ store.Store = (*Store)(nil)

// New returns an empty Store.
func New() *Store {
	return &Store{
		records:  map[string]*record{},
		balances: map[balanceKey]int64{},
		refs:     map[string]int{},
		callers:  map[string]store.Caller{},
		owed:     map[balanceKey]int64{},

		topups:    map[topupKey]*store.Topup{},
		topupKeys: map[topupKey]string{},
		events:    map[eventKey]bool{},
		asks:      map[topupKey]map[string]ask{},
		routes:    map[routeKey]topupKey{},
		parked:    map[routeKey]map[string]parkedAsk{},

		payments:    map[payKey]*payment{},
		paymentKeys: map[keyRef]payKey{},

		quotaUsed: map[quotaKey]int64{},
		caps:      map[capKey]*store.Cap{},
		spend:     map[spendKey]*spendRow{},
	}
}

func clone(r store.Record) store.Record {
	if r.Response != nil {
		resp := *r.Response
		resp.Body = bytes.Clone(resp.Body)
		r.Response = &resp
	}
	return r
}

// norm drops sub-millisecond precision, as the SQL backend stores Unix ms.
func norm(t time.Time) time.Time { return store.FromUnixMilli(store.UnixMilli(t)) }

// Claim implements store.Idempotency.
func (s *Store) Claim(_ context.Context, p store.ClaimParams) (store.ClaimResult, error) {
	if err := store.ValidateClaim(&p); err != nil {
		return store.ClaimResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claim(p, "")
}

// claim is Claim under s.mu; a won claim holds paymentRef, except that a
// takeover keeps a settlement_pending payment.
func (s *Store) claim(p store.ClaimParams, paymentRef string) (store.ClaimResult, error) {
	now := norm(p.Now)
	r, ok := s.records[p.Key]
	fresh := !ok || (!now.Before(r.ExpiresAt) && !(r.Status == store.StatusInProgress && r.LeaseExpiresAt.After(now)) &&
		(r.Status == store.StatusCompleted || (r.Charge.State != store.ChargeCharged && r.Quota != store.QuotaTaken && !s.holdsPending(r))))
	if fresh {
		gen, count, quotas := int64(1), int64(0), int64(0)
		if ok {
			gen, count, quotas = r.Generation+1, r.Charge.Count, r.quotaCount
		}
		r = &record{Record: store.Record{
			Key: p.Key, Status: store.StatusInProgress, Owner: p.Owner, Generation: gen,
			LeaseExpiresAt: now.Add(p.Lease), ExpiresAt: now.Add(p.TTL), Fingerprint: p.Fingerprint,
			Charge: store.Charge{State: store.ChargeNone, Count: count, Hold: store.HoldNone}, CreatedAt: now, UpdatedAt: now,
			PaymentRef: paymentRef, Quota: store.QuotaNone,
		}, incarnation: p.Owner + ":" + strconv.FormatInt(store.UnixMilli(now), 10), tool: p.Tool, caller: p.CallerID,
			quotaCount: quotas}
		s.records[p.Key] = r
		return store.ClaimResult{Outcome: store.OutcomeClaimed, Record: clone(r.Record)}, nil
	}
	r.tag(p)
	if r.Fingerprint != p.Fingerprint {
		return store.ClaimResult{}, store.ErrFingerprintMismatch
	}
	take := r.Status == store.StatusFailed || (r.Status == store.StatusInProgress && !r.LeaseExpiresAt.After(now))
	switch {
	case take:
		r.Status, r.Owner, r.Generation = store.StatusInProgress, p.Owner, r.Generation+1
		r.LeaseExpiresAt, r.ExpiresAt, r.UpdatedAt = now.Add(p.Lease), now.Add(p.TTL), now
		r.Response, r.Error = nil, ""
		if !s.holdsPending(r) {
			r.PaymentRef = paymentRef
		}
		return store.ClaimResult{Outcome: store.OutcomeClaimed, Record: clone(r.Record)}, nil
	case r.Status == store.StatusInProgress && r.Owner == p.Owner:
		r.LeaseExpiresAt, r.UpdatedAt = now.Add(p.Lease), now
		return store.ClaimResult{Outcome: store.OutcomeClaimed, Record: clone(r.Record)}, nil
	case r.Status == store.StatusCompleted:
		return store.ClaimResult{Outcome: store.OutcomeCompleted, Record: clone(r.Record)}, nil
	}
	return store.ClaimResult{Outcome: store.OutcomeInProgress, Record: clone(r.Record)}, nil
}

// Peek implements store.Idempotency.
func (s *Store) Peek(_ context.Context, key string) (store.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[key]
	if !ok {
		return store.Record{}, store.ErrNotFound
	}
	return clone(r.Record), nil
}

// held returns the record f holds in progress, or ErrFencedOut. Callers
// hold s.mu.
func (s *Store) held(f store.Fence) (*record, error) {
	r, ok := s.records[f.Key]
	if !ok || r.Owner != f.Owner || r.Generation != f.Generation || r.Status != store.StatusInProgress {
		return nil, store.ErrFencedOut
	}
	return r, nil
}

// Heartbeat implements store.Idempotency.
func (s *Store) Heartbeat(_ context.Context, f store.Fence, leaseUntil, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.held(f)
	if err != nil {
		return err
	}
	r.LeaseExpiresAt, r.UpdatedAt = norm(leaseUntil), norm(now)
	return nil
}

// Complete implements store.Idempotency.
func (s *Store) Complete(_ context.Context, p store.CompleteParams) error {
	if err := s.checkBody(p.Response.Body); err != nil {
		return err
	}
	if p.Usage != nil {
		if err := store.ValidateUsage([]store.Usage{*p.Usage}); err != nil {
			return err
		}
	}
	if err := store.ValidateCapture(p.Capture); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.held(p.Fence)
	if err != nil {
		return err
	}
	s.complete(r, p)
	return nil
}

// checkBody returns ErrTooLarge for a response body over the limit.
func (s *Store) checkBody(body []byte) error {
	limit := s.MaxResponseBytes
	if limit == 0 {
		limit = store.DefaultMaxResponseBytes
	}
	if len(body) > limit {
		return fmt.Errorf("%w: %d bytes, limit %d", store.ErrTooLarge, len(body), limit)
	}
	return nil
}

// complete stores p's response on r. Callers hold s.mu and r.
func (s *Store) complete(r *record, p store.CompleteParams) {
	resp := p.Response
	resp.Body = bytes.Clone(resp.Body)
	if resp.Body == nil {
		resp.Body = []byte{}
	}
	r.Status, r.Response, r.Error = store.StatusCompleted, &resp, ""
	r.LeaseExpiresAt, r.UpdatedAt = norm(p.Now), norm(p.Now)
	if keep := norm(p.Now).Add(p.TTL); keep.After(r.ExpiresAt) {
		r.ExpiresAt = keep
	}
	if p.Usage != nil {
		s.addUsage(*p.Usage)
		s.addKeyCalls(*p.Usage)
	}
	if c := r.Charge; c.State == store.ChargeCharged && c.Hold == store.HoldHeld {
		r.Charge.Hold, r.capture = store.HoldCaptured, nil
		if p.Capture != nil {
			v := *p.Capture
			r.capture = &v
		}
		if p.Capture != nil && *p.Capture < c.Amount {
			s.release(r, c.Amount-*p.Capture, norm(p.Now))
		}
	}
}

// release gives back amount of r's captured hold, as the SQL backend's
// releaseSQL. Callers hold s.mu.
func (s *Store) release(r *record, amount int64, now time.Time) {
	c := r.Charge
	suffix := r.Key + ":" + r.incarnation + ":" + strconv.FormatInt(c.Count, 10)
	var keyID string
	if i, ok := s.refs["charge:"+suffix]; ok {
		keyID = s.entries[i].keyID
	}
	r.Charge.Amount -= amount
	r.UpdatedAt = now
	s.post(entry{Entry: store.Entry{Caller: c.Caller, Currency: c.Currency, Amount: amount, Kind: store.EntryRelease,
		Reference: "release:" + suffix, Key: r.Key, CreatedAt: now}, incarnation: r.incarnation, keyID: keyID})
}

// Fail implements store.Idempotency.
func (s *Store) Fail(_ context.Context, f store.Fence, reason string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.held(f)
	if err != nil {
		return err
	}
	r.Status, r.Error = store.StatusFailed, reason
	r.LeaseExpiresAt, r.UpdatedAt = norm(now), norm(now)
	return nil
}

// Sweep implements store.Idempotency. Like the SQL backend, it first
// refunds expired records that hold a charge but never completed.
func (s *Store) Sweep(_ context.Context, now time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: sweep limit %d", store.ErrInvalidArgument, limit)
	}
	now = norm(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	sweepable := func(r *record) bool {
		return !now.Before(r.ExpiresAt) && (r.Status != store.StatusInProgress || !now.Before(r.LeaseExpiresAt))
	}
	// As the SQL backend: fail the abandoned (fencing their owners out) before
	// refunding what failed records still hold.
	failed := 0
	for _, r := range s.records {
		if failed == limit {
			break
		}
		if r.Status == store.StatusInProgress && !now.Before(r.LeaseExpiresAt) {
			r.Status, r.Error, r.UpdatedAt = store.StatusFailed, "abandoned: the lease expired before the call finished", now
			failed++
		}
	}
	refunds := 0
	for _, r := range s.records {
		if refunds == min(limit, 10) {
			break
		}
		if r.Status == store.StatusFailed && r.Charge.State == store.ChargeCharged {
			s.refund(r, now)
			refunds++
		}
	}
	returns := 0
	for _, r := range s.records {
		if returns == min(limit, 10) {
			break
		}
		if r.Status == store.StatusFailed && r.Quota == store.QuotaTaken {
			s.returnQuota(r, now)
			returns++
		}
	}
	// As the SQL backend: release the verified payments of failed records;
	// keep records whose payment is not final.
	for _, r := range s.records {
		if pay := s.heldPayment(r); pay != nil && r.Status == store.StatusFailed && pay.State == store.PaymentVerified {
			pay.State, pay.UpdatedAt = store.PaymentNotCharged, now
		}
	}
	n := 0
	for k, r := range s.records {
		if n == limit {
			break
		}
		if pay := s.heldPayment(r); pay != nil && !store.PaymentFinal(pay.State) {
			continue
		}
		if sweepable(r) && (r.Status == store.StatusCompleted || (r.Charge.State != store.ChargeCharged && r.Quota != store.QuotaTaken)) {
			delete(s.records, k)
			n++
		}
	}
	return n, nil
}

// post appends an entry and moves the balance. Callers hold s.mu and have
// checked the entry keeps the balance within [0, MaxAmount].
func (s *Store) post(e entry) int64 {
	bk := balanceKey{e.Caller, e.Currency}
	s.balances[bk] += e.Amount
	s.owed[bk] += e.Owed
	e.BalanceAfter = s.balances[bk]
	s.refs[e.Reference] = len(s.entries)
	s.entries = append(s.entries, e)
	s.countEntry(e)
	switch e.Kind {
	case store.EntryCharge:
		s.spendCharge(e)
	case store.EntryRefund, store.EntryRelease:
		s.spendRefund(e)
	}
	return e.BalanceAfter
}

// Charge implements store.Ledger.
func (s *Store) Charge(_ context.Context, p store.ChargeParams) (store.ChargeResult, error) {
	if err := store.ValidateAmount(p.Amount, p.Currency); err != nil {
		return store.ChargeResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.held(p.Fence)
	if err != nil {
		return store.ChargeResult{}, err
	}
	return s.charge(r, p)
}

// charge is Charge on the record p's fence holds. Callers hold s.mu.
func (s *Store) charge(r *record, p store.ChargeParams) (store.ChargeResult, error) {
	bal := s.balances[balanceKey{p.Caller, p.Currency}]
	if r.Charge.State == store.ChargeCharged || r.Quota == store.QuotaTaken {
		return store.ChargeResult{Charged: false, Balance: bal}, nil
	}
	owed := s.owed[balanceKey{p.Caller, p.Currency}]
	if c := s.capPassed(p); c != nil || bal < p.Amount || owed > 0 {
		return store.ChargeResult{}, &store.InsufficientFundsError{Currency: p.Currency, Balance: bal, Required: p.Amount, Owed: owed, Cap: c}
	}
	r.Charge = store.Charge{State: store.ChargeCharged, Caller: p.Caller, Currency: p.Currency, Amount: p.Amount, Count: r.Charge.Count + 1,
		Hold: store.HoldNone}
	if p.Hold {
		r.Charge.Hold, r.Charge.Max = store.HoldHeld, p.Amount
	}
	r.UpdatedAt = norm(p.Now)
	bal = s.post(entry{Entry: store.Entry{Caller: p.Caller, Currency: p.Currency, Amount: -p.Amount, Kind: "charge",
		Reference: "charge:" + r.Key + ":" + r.incarnation + ":" + strconv.FormatInt(r.Charge.Count, 10), Key: r.Key, CreatedAt: norm(p.Now)},
		incarnation: r.incarnation, keyID: p.KeyID, hold: p.Hold})
	return store.ChargeResult{Charged: true, Balance: bal}, nil
}

// ClaimCharge implements store.Store: the claim, the free quota's take and
// the charge under one hold of the store's lock, as the SQL backend's one
// batch.
func (s *Store) ClaimCharge(_ context.Context, p store.ClaimChargeParams) (store.ClaimChargeResult, error) {
	if err := store.ValidateClaim(&p.ClaimParams); err != nil {
		return store.ClaimChargeResult{}, err
	}
	if p.Quota != nil {
		if err := store.ValidateQuota(p); err != nil {
			return store.ClaimChargeResult{}, err
		}
	}
	if p.Quota == nil || p.Amount != 0 {
		if err := store.ValidateAmount(p.Amount, p.Currency); err != nil {
			return store.ClaimChargeResult{}, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cr, err := s.claim(p.ClaimParams, "")
	if err != nil || cr.Outcome != store.OutcomeClaimed {
		return store.ClaimChargeResult{ClaimResult: cr}, err
	}
	res := store.ClaimChargeResult{ClaimResult: cr}
	r := s.records[p.Key]
	if q := p.Quota; q != nil {
		k := quotaKey{p.Caller, p.Tool, store.UnixMilli(q.Window)}
		switch {
		case r.Quota == store.QuotaTaken:
			res.Quota.Free = true
		case r.Charge.State != store.ChargeCharged && s.quotaUsed[k] < q.Limit:
			res.Quota = store.QuotaResult{Free: true, Used: s.takeQuota(r, k, p.Now)}
		case p.Amount == 0:
			res.ChargeErr = store.ErrQuotaExhausted
		}
		if res.Quota.Free || p.Amount == 0 {
			return res, nil
		}
	}
	res.Charge, res.ChargeErr = s.charge(r, store.ChargeParams{Fence: fenceOf(r), Caller: p.Caller,
		Currency: p.Currency, Amount: p.Amount, Now: p.Now, KeyID: p.KeyID, Hold: p.Hold})
	return res, nil
}

// Refund implements store.Ledger.
func (s *Store) Refund(_ context.Context, f store.Fence, now time.Time) (bool, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.held(f)
	if err != nil {
		return false, 0, err
	}
	c := r.Charge
	if r.Quota == store.QuotaTaken {
		s.returnQuota(r, now)
		return true, 0, nil
	}
	if c.State != store.ChargeCharged {
		return false, s.balances[balanceKey{c.Caller, c.Currency}], nil
	}
	bal := s.refund(r, now)
	return true, bal, nil
}

// refund posts the refund of r's open charge. Callers hold s.mu and have
// checked that r is charged.
func (s *Store) refund(r *record, now time.Time) int64 {
	c := r.Charge
	r.Charge.State = store.ChargeRefunded
	r.UpdatedAt = norm(now)
	return s.post(entry{Entry: store.Entry{Caller: c.Caller, Currency: c.Currency, Amount: c.Amount, Kind: "refund",
		Reference: "refund:" + r.Key + ":" + r.incarnation + ":" + strconv.FormatInt(c.Count, 10), Key: r.Key, CreatedAt: norm(now)},
		incarnation: r.incarnation})
}

// Credit implements store.Ledger.
func (s *Store) Credit(_ context.Context, p store.CreditParams) (store.CreditResult, error) {
	if err := store.ValidateCredit(p); err != nil {
		return store.CreditResult{}, err
	}
	ref := "credit:" + p.Reference
	s.mu.Lock()
	defer s.mu.Unlock()
	bal := s.balances[balanceKey{p.Caller, p.Currency}]
	if i, ok := s.refs[ref]; ok {
		e := s.entries[i]
		if e.Caller != p.Caller || e.Currency != p.Currency || e.Amount != p.Amount {
			return store.CreditResult{}, store.ErrReferenceConflict
		}
		return store.CreditResult{Applied: false, Balance: bal}, nil
	}
	if bal > store.MaxAmount-p.Amount {
		return store.CreditResult{}, fmt.Errorf("%w: balance would exceed %d", store.ErrInvalidAmount, store.MaxAmount)
	}
	bal = s.post(entry{Entry: store.Entry{Caller: p.Caller, Currency: p.Currency, Amount: p.Amount, Kind: store.EntryCredit,
		Reference: ref, CreatedAt: norm(p.Now)}})
	bal -= s.repay(p.Caller, p.Currency, ref, norm(p.Now))
	return store.CreditResult{Applied: true, Balance: bal}, nil
}

// Balance implements store.Ledger.
func (s *Store) Balance(_ context.Context, caller, currency string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.balances[balanceKey{caller, currency}], nil
}

// Entries implements store.Ledger.
func (s *Store) Entries(_ context.Context, f store.EntryFilter) ([]store.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []store.Entry{}
	for _, e := range s.entries {
		if (f.Caller == "" || e.Caller == f.Caller) && (f.Key == "" || e.Key == f.Key) {
			out = append(out, e.Entry)
		}
	}
	return out, nil
}

// CallerByID implements store.Callers.
func (s *Store) CallerByID(_ context.Context, id string) (store.Caller, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.callers[id]
	if !ok {
		return store.Caller{}, store.ErrNotFound
	}
	return c, nil
}

// CheckInvariants implements store.Store, with the same checks as the SQL
// backend: the charge invariant, then the funding invariant (checkFunding).
func (s *Store) CheckInvariants(_ context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	sums := map[balanceKey]int64{}
	type group struct{ charges, refunds, net int64 }
	groups := map[string]*group{}
	for _, e := range s.entries {
		bk := balanceKey{e.Caller, e.Currency}
		sums[bk] += e.Amount
		if sums[bk] != e.BalanceAfter || sums[bk] < 0 {
			errs = append(errs, fmt.Errorf("invariant broken: %s balance_after %d running %d", e.Reference, e.BalanceAfter, sums[bk]))
		}
		if e.Kind == store.EntryRelease {
			errs = append(errs, s.checkRelease(e)...)
		}
		if e.Kind != store.EntryCharge && e.Kind != store.EntryRefund && e.Kind != store.EntryRelease {
			continue
		}
		g := groups[e.Key+"\x00"+e.incarnation]
		if g == nil {
			g = &group{}
			groups[e.Key+"\x00"+e.incarnation] = g
		}
		g.net -= e.Amount
		switch e.Kind {
		case store.EntryCharge:
			g.charges++
		case store.EntryRefund:
			g.refunds++
		}
	}
	for bk, b := range s.balances {
		if b != sums[bk] || b < 0 {
			errs = append(errs, fmt.Errorf("invariant broken: %s/%s balance %d entries %d", bk.caller, bk.currency, b, sums[bk]))
		}
	}
	for k, g := range groups {
		if d := g.charges - g.refunds; d != 0 && d != 1 {
			errs = append(errs, fmt.Errorf("invariant broken: key %q: %d charges, %d refunds", k, g.charges, g.refunds))
		}
	}
	keys := make([]string, 0, len(s.records))
	for k := range s.records {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r := s.records[k]
		var net int64
		if g := groups[k+"\x00"+r.incarnation]; g != nil {
			net = g.net
		}
		want := int64(0)
		if r.Charge.State == store.ChargeCharged {
			want = r.Charge.Amount
		}
		if net != want {
			errs = append(errs, fmt.Errorf("invariant broken: key %q state %s net %d", k, r.Charge.State, net))
		}
		if r.Status == store.StatusCompleted && r.Response != nil && r.Response.StatusCode/100 == 2 && r.Charge.State == store.ChargeRefunded {
			errs = append(errs, fmt.Errorf("invariant broken: key %q: a stored 2xx answer was refunded", k))
		}
		errs = append(errs, s.checkHold(r)...)
	}
	errs = append(errs, s.checkFunding()...)
	errs = append(errs, s.checkPayments()...)
	errs = append(errs, s.checkQuota()...)
	errs = append(errs, s.checkCaps()...)
	errs = append(errs, s.checkKeys()...)
	return errors.Join(errs...)
}
