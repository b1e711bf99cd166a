package store

import (
	"context"
	"fmt"
	"time"
)

// # Spending caps
//
// A cap limits what a caller, or one of its keys, may spend in a currency
// per window (a UTC day, a week from Monday, a month, or ever). It is
// enforced inside the charge statement itself, like the balance:
//
//  21. a charge that would bring the spend of any cap over its limit is
//      refused, changing nothing, with an *InsufficientFundsError whose
//      Cap says which cap: concurrent charges never pass a cap by one
//      minor unit;
//  22. the spend of a cap's window is the sum of the charges of the
//      caller (or key) and currency made in the window, less the refunds
//      of those charges (a refund gives the spend back to the window of
//      its charge); it is kept per (caller, key, currency, reset, window)
//      by the same statement that writes the ledger entry, and the
//      database refuses a spend above the limit in force at the charge.
//
// Backends verify 21-22 in CheckInvariants, and that every window's spend
// belongs to a cap of its reset: DeleteCap removes a cap with its windows
// in one statement, so a cap set again later counts its window's spend
// from the ledger, as any new cap does.

// AnyKey is Cap.Key of a cap on the caller as a whole: every key's charges
// count against it.
const AnyKey = "*"

// CapReset is when a cap's spend starts again from zero.
type CapReset string

// Cap resets.
const (
	ResetDaily   CapReset = "daily"
	ResetWeekly  CapReset = "weekly"
	ResetMonthly CapReset = "monthly"
	ResetNever   CapReset = "never"
)

// Valid reports whether r is one of the resets.
func (r CapReset) Valid() bool {
	return r == ResetDaily || r == ResetWeekly || r == ResetMonthly || r == ResetNever
}

// Window returns the start and end of r's window that holds t (UTC days,
// weeks from Monday, months); for ResetNever, the Unix epoch and the zero
// time.
func (r CapReset) Window(t time.Time) (start, end time.Time) {
	switch r {
	case ResetDaily:
		return PeriodDay.Window(t)
	case ResetWeekly:
		return PeriodWeek.Window(t)
	case ResetMonthly:
		return PeriodMonth.Window(t)
	}
	return time.UnixMilli(0).UTC(), time.Time{}
}

// Cap is a spending cap and, as read, its current window's spend.
type Cap struct {
	Caller   string
	Key      string // the key the cap is on ("" the caller's original key), or AnyKey
	Currency string
	Limit    int64 // minor units, >= 0
	Reset    CapReset
	// Spent is the spend of the window that holds the read's now, and
	// ResetsAt that window's end (zero for ResetNever).
	Spent     int64
	ResetsAt  time.Time
	UpdatedAt time.Time
}

// SetCapParams are the arguments of SetCap.
type SetCapParams struct {
	Caller, Key, Currency string
	Limit                 int64
	Reset                 CapReset
	Now                   time.Time
}

// Caps stores spending caps.
type Caps interface {
	// SetCap creates or replaces the cap of (caller, key, currency). Its
	// current window's spend is computed from the ledger, so a cap set in
	// the middle of a window counts what was spent before. It returns
	// ErrInvalidAmount (a negative limit or one not below 2^53),
	// ErrUnknownCurrency, or ErrInvalidArgument (an unknown reset, no
	// caller).
	SetCap(ctx context.Context, p SetCapParams) (Cap, error)
	// Caps returns the caller's caps with their spend at now, by key and
	// currency.
	Caps(ctx context.Context, caller string, now time.Time) ([]Cap, error)
	// DeleteCap removes the cap of (caller, key, currency) and the spend of
	// its windows, atomically: charges are no longer limited by it (the
	// ledger keeps their record). It returns ErrNotFound when there is no
	// such cap, changing nothing.
	DeleteCap(ctx context.Context, caller, key, currency string) error
}

// ValidateCap checks SetCap's arguments.
func ValidateCap(p SetCapParams) error {
	if _, err := Decimals(p.Currency); err != nil {
		return err
	}
	if p.Limit < 0 || p.Limit > MaxAmount {
		return fmt.Errorf("%w: cap limit %d", ErrInvalidAmount, p.Limit)
	}
	if p.Caller == "" || !p.Reset.Valid() {
		return fmt.Errorf("%w: a cap needs a caller and a reset of daily, weekly, monthly or never", ErrInvalidArgument)
	}
	return nil
}
