package memory

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// quotaKey is a caller's usage of one tool's free quota in one window
// (Unix ms of its start).
type quotaKey struct {
	caller, tool string
	window       int64
}

// quotaEntry is a take or a return of a unit, as the SQL backend's
// quota_entries.
type quotaEntry struct {
	quotaKey
	kind, reference, key, incarnation string
	usedAfter                         int64
}

func fenceOf(r *record) store.Fence {
	return store.Fence{Key: r.Key, Owner: r.Owner, Generation: r.Generation}
}

// takeQuota takes one unit of k for r and returns the window's usage
// after it. Callers hold s.mu and have checked r holds no unit or charge.
func (s *Store) takeQuota(r *record, k quotaKey, now time.Time) int64 {
	r.quotaCount++
	r.Quota, r.quotaAt, r.UpdatedAt = store.QuotaTaken, k, norm(now)
	s.quotaUsed[k]++
	s.quotaEntries = append(s.quotaEntries, quotaEntry{quotaKey: k, kind: "take", key: r.Key, incarnation: r.incarnation,
		reference: "take:" + r.Key + ":" + r.incarnation + ":" + strconv.FormatInt(r.quotaCount, 10), usedAfter: s.quotaUsed[k]})
	return s.quotaUsed[k]
}

// returnQuota gives r's unit back to the window it was taken from. Callers
// hold s.mu and have checked r holds a unit.
func (s *Store) returnQuota(r *record, now time.Time) {
	k := r.quotaAt
	r.Quota, r.UpdatedAt = store.QuotaReturned, norm(now)
	s.quotaUsed[k]--
	s.quotaEntries = append(s.quotaEntries, quotaEntry{quotaKey: k, kind: "return", key: r.Key, incarnation: r.incarnation,
		reference: "return:" + r.Key + ":" + r.incarnation + ":" + strconv.FormatInt(r.quotaCount, 10), usedAfter: s.quotaUsed[k]})
}

// checkQuota verifies the quota invariant (see store/quota.go) as the SQL
// backend's quotaInvariantChecks do. Callers hold s.mu.
func (s *Store) checkQuota() []error {
	var errs []error
	running := map[quotaKey]int64{}
	net := map[string]int64{} // key and incarnation -> takes - returns
	refs := map[string]bool{}
	for _, e := range s.quotaEntries {
		d := int64(1)
		if e.kind == "return" {
			d = -1
		}
		running[e.quotaKey] += d
		if running[e.quotaKey] != e.usedAfter || e.usedAfter < 0 {
			errs = append(errs, fmt.Errorf("invariant broken: quota %s used_after %d running %d", e.reference, e.usedAfter, running[e.quotaKey]))
		}
		if refs[e.reference] {
			errs = append(errs, fmt.Errorf("invariant broken: quota reference %s twice", e.reference))
		}
		refs[e.reference] = true
		net[e.key+"\x00"+e.incarnation] += d
		if n := net[e.key+"\x00"+e.incarnation]; n != 0 && n != 1 {
			errs = append(errs, fmt.Errorf("invariant broken: key %q holds %d units of quota", e.key, n))
		}
	}
	for k, used := range s.quotaUsed {
		if used != running[k] {
			errs = append(errs, fmt.Errorf("invariant broken: quota %s/%s/%d used %d entries %d", k.caller, k.tool, k.window, used, running[k]))
		}
	}
	keys := make([]string, 0, len(s.records))
	for k := range s.records {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r := s.records[k]
		want := int64(0)
		if r.Quota == store.QuotaTaken {
			want = 1
		}
		if n := net[k+"\x00"+r.incarnation]; n != want {
			errs = append(errs, fmt.Errorf("invariant broken: key %q quota %s net %d", k, r.Quota, n))
		}
		if r.Quota == store.QuotaTaken && r.Charge.State == store.ChargeCharged {
			errs = append(errs, fmt.Errorf("invariant broken: key %q holds a unit of quota and a charge", k))
		}
	}
	return errs
}
