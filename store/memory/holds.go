package memory

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/toolgate/toolgate-go/store"
)

// checkHold verifies the hold invariant (store/holds.go, 23 and 25) for r,
// as the SQL backend's checks do. Callers hold s.mu.
func (s *Store) checkHold(r *record) []error {
	c := r.Charge
	if c.State != store.ChargeCharged || c.Hold == store.HoldNone {
		return nil
	}
	var errs []error
	i, ok := s.refs["charge:"+r.Key+":"+r.incarnation+":"+strconv.FormatInt(c.Count, 10)]
	if c.Amount > c.Max || !ok || !s.entries[i].hold || -s.entries[i].Amount != c.Max {
		errs = append(errs, fmt.Errorf("invariant broken: key %q: hold %s amount %d max %d", r.Key, c.Hold, c.Amount, c.Max))
	}
	if c.Hold == store.HoldCaptured {
		want := c.Max
		if r.capture != nil {
			want = min(*r.capture, c.Max)
		}
		if c.Amount != want {
			errs = append(errs, fmt.Errorf("invariant broken: key %q: captured %d, the Complete asked %d", r.Key, c.Amount, want))
		}
	}
	if r.Status == store.StatusCompleted && c.Hold == store.HoldHeld {
		errs = append(errs, fmt.Errorf("invariant broken: key %q: completed with an open hold", r.Key))
	}
	return errs
}

// checkRelease verifies that a release gives back part of one hold (24).
// Callers hold s.mu.
func (s *Store) checkRelease(e entry) []error {
	i, ok := s.refs["charge:"+strings.TrimPrefix(e.Reference, "release:")]
	if !ok {
		return []error{fmt.Errorf("invariant broken: %s: a release without its charge", e.Reference)}
	}
	ch := s.entries[i]
	if !ch.hold || e.Amount > -ch.Amount || ch.Key != e.Key || ch.Caller != e.Caller || ch.Currency != e.Currency || ch.keyID != e.keyID {
		return []error{fmt.Errorf("invariant broken: %s: released %d of %d", e.Reference, e.Amount, -ch.Amount)}
	}
	return nil
}
