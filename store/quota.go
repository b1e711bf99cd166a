package store

import (
	"fmt"
	"time"
)

// # Free quotas
//
// A tool may give each caller its first N calls per window free (a UTC
// hour, day, week from Monday, or month). The unit of quota belongs to the
// idempotency key, exactly as the charge does, and the same rules hold:
//
//  17. per key (per incarnation), at most one unit of quota is held at any
//      time, through any sequence of claim, crash, takeover, retry, refund
//      and retry; a takeover inherits it, a replay or a waiter never takes
//      one, and a key holding a unit is never charged (nor a charged key
//      given a unit);
//  18. a unit is taken only in the same atomic step as the claim that won
//      the key (ClaimCharge), and only while the caller's usage of the
//      (tool, window) is below the limit: concurrent claims never take more
//      than the limit;
//  19. Refund (and Sweep, for an abandoned key) gives the unit back exactly
//      once, to the window it was taken from;
//  20. every take and return is an append-only quota entry, and for every
//      (caller, tool, window) the usage equals takes minus returns, which
//      is never negative.
//
// Backends verify 17-20 in CheckInvariants.

// Period is the length of a free quota's window. Windows are UTC calendar
// units: an hour, a day, a week starting on Monday, or a month.
type Period string

// Periods.
const (
	PeriodHour  Period = "hour"
	PeriodDay   Period = "day"
	PeriodWeek  Period = "week"
	PeriodMonth Period = "month"
)

// Valid reports whether p is one of the periods.
func (p Period) Valid() bool {
	return p == PeriodHour || p == PeriodDay || p == PeriodWeek || p == PeriodMonth
}

// Window returns the start and the end of the window of p that holds t, in
// UTC. It panics on an invalid period.
func (p Period) Window(t time.Time) (start, end time.Time) {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	switch p {
	case PeriodHour:
		start = t.Truncate(time.Hour)
		return start, start.Add(time.Hour)
	case PeriodDay:
		return day, day.AddDate(0, 0, 1)
	case PeriodWeek:
		start = day.AddDate(0, 0, -(int(t.Weekday())+6)%7)
		return start, start.AddDate(0, 0, 7)
	case PeriodMonth:
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	panic(fmt.Sprintf("store: invalid period %q", p))
}

// QuotaState says whether the current incarnation of a key holds a unit of
// free quota. A key moves none → taken → returned → taken → ...
type QuotaState string

// Quota states.
const (
	QuotaNone     QuotaState = "none"
	QuotaTaken    QuotaState = "taken"
	QuotaReturned QuotaState = "returned"
)

// Quota is a free quota offered with a claim (ClaimChargeParams.Quota): if
// the claim wins the key, it takes one unit of the caller's usage of
// (ClaimParams.Tool, Window) while that usage is below Limit, instead of
// charging.
type Quota struct {
	Limit  int64     // calls per window, > 0
	Window time.Time // the window's start (Period.Window)
}

// QuotaResult reports the free quota of a won claim.
type QuotaResult struct {
	// Free is true when the key holds a unit: taken by this claim, or
	// inherited by a takeover.
	Free bool
	// Used is the window's usage right after this claim took its unit; 0
	// when the unit was inherited (the usage was not read).
	Used int64
}

// ValidateQuota checks a ClaimCharge's quota: a positive limit, and a tool
// and a caller to count it for (the claim's CallerID, the charged Caller).
func ValidateQuota(p ClaimChargeParams) error {
	if p.Quota.Limit <= 0 || p.Quota.Limit > MaxAmount || p.Tool == "" || p.Caller == "" || p.CallerID != p.Caller {
		return fmt.Errorf("%w: a quota needs a limit from 1 to 2^53-1, a tool, and CallerID equal to Caller", ErrInvalidArgument)
	}
	return nil
}
