package memory

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

type payKey struct{ caller, ref string }

type keyRef struct{ key, ref string }

type payment struct {
	store.Payment
	seq int64 // insertion order, for PaymentsByKey
}

func (p *payment) copy() store.Payment {
	out := p.Payment
	out.Payload, out.Requirements = bytes.Clone(p.Payload), bytes.Clone(p.Requirements)
	return out
}

// heldPayment returns the payment r's incarnation holds, or nil. Callers
// hold s.mu.
func (s *Store) heldPayment(r *record) *payment {
	if r.PaymentRef == "" {
		return nil
	}
	pk, ok := s.paymentKeys[keyRef{r.Key, r.PaymentRef}]
	if !ok {
		return nil
	}
	return s.payments[pk]
}

// holdsPending reports whether r holds a settlement_pending payment.
func (s *Store) holdsPending(r *record) bool {
	pay := s.heldPayment(r)
	return pay != nil && pay.State == store.PaymentPending
}

// usable reports whether pay, bound to its key, may pay for a claim of it
// at now (as the SQL backend's paymentUsable). Callers hold s.mu.
func (s *Store) usable(pay *payment, now time.Time) bool {
	switch {
	case pay.State == store.PaymentVerified, pay.State == store.PaymentNotCharged,
		pay.State == store.PaymentFailed && !pay.Delivered:
		return true
	}
	r, ok := s.records[pay.Key]
	if !ok || r.PaymentRef != pay.Ref {
		return false
	}
	return (r.Status == store.StatusCompleted && r.ExpiresAt.After(now)) ||
		(r.Status != store.StatusCompleted && pay.State == store.PaymentPending)
}

// ClaimPayment implements store.Payments: under the lock, the bind happens
// only when the claim takes the payment, so nothing needs undoing.
func (s *Store) ClaimPayment(_ context.Context, p store.ClaimPaymentParams) (store.ClaimPaymentResult, error) {
	if err := store.ValidateClaim(&p.ClaimParams); err != nil {
		return store.ClaimPaymentResult{}, err
	}
	if err := store.ValidatePayment(p.Payment); err != nil {
		return store.ClaimPaymentResult{}, err
	}
	now := norm(p.Now)
	s.mu.Lock()
	defer s.mu.Unlock()
	pk := payKey{p.Payment.Caller, p.Payment.Ref}
	pay := s.payments[pk]
	if other, ok := s.paymentKeys[keyRef{p.Key, p.Payment.Ref}]; ok && other != pk {
		return store.ClaimPaymentResult{}, store.ErrPaymentReused
	}
	if pay != nil && (pay.Key != p.Key || !s.usable(pay, now)) {
		return store.ClaimPaymentResult{}, store.ErrPaymentReused
	}
	cr, err := s.claim(p.ClaimParams, p.Payment.Ref)
	if err != nil {
		return store.ClaimPaymentResult{}, err
	}
	r := s.records[p.Key]
	if cr.Outcome == store.OutcomeClaimed && r.PaymentRef == p.Payment.Ref {
		switch {
		case pay == nil:
			s.paymentSeq++
			pay = &payment{Payment: p.Payment, seq: s.paymentSeq}
			pay.Payload, pay.Requirements = bytes.Clone(pay.Payload), bytes.Clone(pay.Requirements)
			pay.Key, pay.State, pay.ValidBefore = p.Key, store.PaymentVerified, norm(pay.ValidBefore)
			pay.Transaction, pay.Reason, pay.Delivered, pay.Attempts = "", "", false, 0
			pay.NextAttemptAt, pay.CreatedAt, pay.UpdatedAt = store.FromUnixMilli(0), now, now
			s.payments[pk] = pay
			s.paymentKeys[keyRef{p.Key, pay.Ref}] = pk
		case !pay.Delivered && (pay.State == store.PaymentNotCharged || pay.State == store.PaymentFailed):
			pay.State, pay.Reason, pay.UpdatedAt = store.PaymentVerified, "", now
		}
	}
	// Release the verified payments the record no longer holds.
	for _, o := range s.payments {
		if o.Key == p.Key && o.State == store.PaymentVerified && o.Ref != r.PaymentRef {
			o.State, o.UpdatedAt = store.PaymentNotCharged, now
		}
	}
	res := store.ClaimPaymentResult{ClaimResult: cr}
	if held := s.heldPayment(r); held != nil {
		res.Payment = held.copy()
	}
	return res, nil
}

// heldWith returns the record f holds in progress with payment ref, and
// that payment, or ErrFencedOut. Callers hold s.mu.
func (s *Store) heldWith(f store.Fence, ref string) (*record, *payment, error) {
	r, err := s.held(f)
	if err != nil || r.PaymentRef != ref {
		return nil, nil, store.ErrFencedOut
	}
	pay := s.heldPayment(r)
	if pay == nil {
		return nil, nil, store.ErrFencedOut
	}
	return r, pay, nil
}

// MarkSettling implements store.Payments.
func (s *Store) MarkSettling(_ context.Context, f store.Fence, ref string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, pay, err := s.heldWith(f, ref)
	if err != nil {
		return err
	}
	switch pay.State {
	case store.PaymentVerified:
		pay.State, pay.NextAttemptAt, pay.UpdatedAt = store.PaymentPending, norm(now), norm(now)
	case store.PaymentPending:
	default:
		return store.ErrFencedOut
	}
	return nil
}

// CompletePaid implements store.Payments.
func (s *Store) CompletePaid(_ context.Context, p store.CompleteParams, ref string, out store.PaymentOutcome) error {
	if err := store.ValidPaymentOutcome(out, store.PaymentSettled, store.PaymentPending, store.PaymentFailed); err != nil {
		return err
	}
	if p.Response.StatusCode/100 != 2 {
		return fmt.Errorf("%w: a paid call completes with a 2xx answer, got %d", store.ErrInvalidArgument, p.Response.StatusCode)
	}
	if err := s.checkBody(p.Response.Body); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, pay, err := s.heldWith(p.Fence, ref)
	if err != nil {
		return err
	}
	now := norm(p.Now)
	switch {
	case pay.State == store.PaymentVerified || pay.State == store.PaymentPending:
		if out.State == store.PaymentPending {
			pay.NextAttemptAt = now
		}
		pay.State, pay.Transaction, pay.Reason, pay.Delivered, pay.UpdatedAt = out.State, out.Transaction, out.Reason, true, now
	case pay.State == out.State && pay.Delivered:
		// As SQL: the payment already carries the outcome.
	default:
		return store.ErrFencedOut
	}
	s.complete(r, p)
	return nil
}

// FailPaid implements store.Payments.
func (s *Store) FailPaid(_ context.Context, f store.Fence, reason string, ref string, out store.PaymentOutcome, now time.Time) error {
	if err := store.ValidPaymentOutcome(out, store.PaymentNotCharged, store.PaymentFailed); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, pay, err := s.heldWith(f, ref)
	if err != nil {
		return err
	}
	now = norm(now)
	switch pay.State {
	case store.PaymentVerified, store.PaymentPending:
		if pay.State == store.PaymentPending {
			pay.NextAttemptAt = now
		}
		if pay.State != store.PaymentPending || out.State != store.PaymentNotCharged {
			pay.State = out.State
		}
		pay.Reason, pay.UpdatedAt = reason, now
		if out.Reason != "" {
			pay.Reason = out.Reason
		}
	case out.State:
	default:
		return store.ErrFencedOut
	}
	r.Status, r.Error = store.StatusFailed, reason
	r.LeaseExpiresAt, r.UpdatedAt = now, now
	return nil
}

// live reports whether pay's key is held in progress with it under a live
// lease. Callers hold s.mu.
func (s *Store) live(pay *payment, now time.Time) bool {
	r, ok := s.records[pay.Key]
	return ok && r.PaymentRef == pay.Ref && r.Status == store.StatusInProgress && r.LeaseExpiresAt.After(now)
}

// Losses implements store.Payments.
func (s *Store) Losses(_ context.Context, limit int) ([]store.Payment, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d", store.ErrInvalidArgument, limit)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var lost []*payment
	for _, p := range s.payments {
		if p.State == store.PaymentFailed && p.Delivered {
			lost = append(lost, p)
		}
	}
	sort.Slice(lost, func(i, j int) bool {
		a, b := lost[i], lost[j]
		if !a.UpdatedAt.Equal(b.UpdatedAt) {
			return a.UpdatedAt.After(b.UpdatedAt)
		}
		if a.Caller != b.Caller {
			return a.Caller < b.Caller
		}
		return a.Ref < b.Ref
	})
	out := []store.Payment{}
	for _, p := range lost[:min(limit, len(lost))] {
		out = append(out, p.copy())
	}
	return out, nil
}

// DuePayments implements store.Payments.
func (s *Store) DuePayments(_ context.Context, now time.Time, limit int) ([]store.Payment, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d", store.ErrInvalidArgument, limit)
	}
	now = norm(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*payment
	for _, p := range s.payments {
		if p.State == store.PaymentPending && !p.NextAttemptAt.After(now) && !s.live(p, now) {
			due = append(due, p)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		a, b := due[i], due[j]
		if !a.NextAttemptAt.Equal(b.NextAttemptAt) {
			return a.NextAttemptAt.Before(b.NextAttemptAt)
		}
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.Before(b.CreatedAt)
		}
		if a.Caller != b.Caller {
			return a.Caller < b.Caller
		}
		return a.Ref < b.Ref
	})
	out := []store.Payment{}
	for _, p := range due[:min(limit, len(due))] {
		out = append(out, p.copy())
	}
	return out, nil
}

// ResolvePayment implements store.Payments.
func (s *Store) ResolvePayment(_ context.Context, caller, ref string, out store.PaymentOutcome, next, now time.Time) (store.Payment, error) {
	if err := store.ValidPaymentOutcome(out, store.PaymentSettled, store.PaymentFailed, store.PaymentPending); err != nil {
		return store.Payment{}, err
	}
	now = norm(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	pay, ok := s.payments[payKey{caller, ref}]
	if !ok {
		return store.Payment{}, store.ErrNotFound
	}
	if pay.State != store.PaymentPending || s.live(pay, now) {
		return pay.copy(), nil
	}
	switch out.State {
	case store.PaymentPending:
		pay.NextAttemptAt = norm(next)
	case store.PaymentFailed:
		pay.State, pay.Transaction = store.PaymentFailed, out.Transaction
	case store.PaymentSettled:
		r, held := s.records[pay.Key]
		held = held && r.PaymentRef == pay.Ref
		answered := held && r.Status == store.StatusCompleted && r.Response != nil && r.Response.StatusCode/100 == 2
		pay.State, pay.Transaction = store.PaymentSettled, out.Transaction
		if !pay.Delivered && !answered {
			cref := store.PaymentCreditReference(pay.Ref)
			bk := balanceKey{pay.Caller, pay.Currency}
			if _, taken := s.refs[cref]; taken {
				return store.Payment{}, fmt.Errorf("%w: credit-back reference %s is taken", store.ErrReferenceConflict, cref)
			}
			if s.balances[bk] > store.MaxAmount-pay.Amount {
				return store.Payment{}, fmt.Errorf("%w: balance would exceed %d", store.ErrInvalidAmount, store.MaxAmount)
			}
			if held && r.Status == store.StatusInProgress {
				r.Status, r.UpdatedAt, r.LeaseExpiresAt = store.StatusFailed, now, now
				r.Error = "abandoned: the lease expired before the call finished; its payment was settled and credited back"
			}
			s.post(entry{Entry: store.Entry{Caller: pay.Caller, Currency: pay.Currency, Amount: pay.Amount,
				Kind: store.EntryCredit, Reference: cref, CreatedAt: now}})
			pay.State = store.PaymentCreditedBack
		}
	}
	pay.Reason, pay.Attempts, pay.UpdatedAt = out.Reason, pay.Attempts+1, now
	return pay.copy(), nil
}

// PaymentByRef implements store.Payments.
func (s *Store) PaymentByRef(_ context.Context, caller, ref string) (store.Payment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pay, ok := s.payments[payKey{caller, ref}]
	if !ok {
		return store.Payment{}, store.ErrNotFound
	}
	return pay.copy(), nil
}

// PaymentsByKey implements store.Payments.
func (s *Store) PaymentsByKey(_ context.Context, key string) ([]store.Payment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []*payment
	for _, p := range s.payments {
		if p.Key == key {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].seq < ps[j].seq })
	out := []store.Payment{}
	for _, p := range ps {
		out = append(out, p.copy())
	}
	return out, nil
}

// checkPayments verifies the payment invariant (12-16 of store.Payments),
// as the SQL backend's paymentInvariantChecks. Callers hold s.mu.
func (s *Store) checkPayments() []error {
	var errs []error
	broken := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("invariant broken: "+format, args...))
	}
	keys := make([]payKey, 0, len(s.payments))
	for k := range s.payments {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return s.payments[keys[i]].seq < s.payments[keys[j]].seq })
	open := map[string]int{}
	for _, k := range keys {
		p := s.payments[k]
		r, ok := s.records[p.Key]
		held := ok && r.PaymentRef == p.Ref
		isOpen := p.State == store.PaymentVerified || (p.State == store.PaymentPending && !p.Delivered)
		if isOpen {
			open[p.Key]++
			if !held || r.Status == store.StatusCompleted {
				broken("payment %s/%s is %s for %s without its key's unfinished record", p.Caller, p.Ref, p.State, p.Key)
			}
		}
		cref := store.PaymentCreditReference(p.Ref)
		i, credited := s.refs[cref]
		if credited != (p.State == store.PaymentCreditedBack) {
			broken("payment %s/%s is %s, credit-back entry %v", p.Caller, p.Ref, p.State, credited)
		}
		if credited {
			e := s.entries[i]
			if e.Caller != p.Caller || e.Currency != p.Currency || e.Amount != p.Amount || e.Kind != store.EntryCredit {
				broken("payment %s/%s: credit-back entry %+v", p.Caller, p.Ref, e.Entry)
			}
		}
		if held && p.State == store.PaymentSettled && !(r.Status == store.StatusCompleted && r.Response != nil && r.Response.StatusCode/100 == 2) {
			broken("key %s is %s with settled payment %s", r.Key, r.Status, p.Ref)
		}
		delivered := p.State == store.PaymentSettled || p.State == store.PaymentPending || p.State == store.PaymentFailed
		if p.Delivered && !delivered {
			broken("payment %s/%s is %s but delivered", p.Caller, p.Ref, p.State)
		}
	}
	for key, n := range open {
		if n > 1 {
			broken("key %s: %d open payments", key, n)
		}
	}
	for _, e := range s.entries {
		if len(e.Reference) > len("credit:x402:") && e.Reference[:len("credit:x402:")] == "credit:x402:" {
			found := false
			for _, p := range s.payments {
				if store.PaymentCreditReference(p.Ref) == e.Reference && p.Caller == e.Caller && p.State == store.PaymentCreditedBack {
					found = true
				}
			}
			if !found {
				broken("credit-back entry %s without its credited_back payment", e.Reference)
			}
		}
	}
	rkeys := make([]string, 0, len(s.records))
	for k := range s.records {
		rkeys = append(rkeys, k)
	}
	sort.Strings(rkeys)
	for _, k := range rkeys {
		r := s.records[k]
		if r.PaymentRef == "" {
			continue
		}
		p := s.heldPayment(r)
		if p == nil {
			broken("key %s holds payment %s, not bound to it", k, r.PaymentRef)
			continue
		}
		answered := r.Status == store.StatusCompleted && r.Response != nil && r.Response.StatusCode/100 == 2
		if answered && !(p.Delivered && (p.State == store.PaymentSettled || p.State == store.PaymentPending || p.State == store.PaymentFailed)) {
			broken("key %s stored a 2xx answer with payment %s %s (delivered %v)", k, p.Ref, p.State, p.Delivered)
		}
	}
	return errs
}
