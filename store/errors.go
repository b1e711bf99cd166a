package store

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Backends return them (possibly wrapped) so that callers
// can test with errors.Is.
var (
	// ErrNotFound means no record, caller or entry matched.
	ErrNotFound = errors.New("store: not found")
	// ErrFencedOut means the (owner, generation) pair no longer holds the
	// record: its lease was taken over, or it was completed or failed.
	ErrFencedOut = errors.New("store: fenced out")
	// ErrFingerprintMismatch means the key was used for a different request.
	ErrFingerprintMismatch = errors.New("store: idempotency key reused with a different request")
	// ErrInvalidKey means the key is empty, longer than MaxKeyLen bytes, or
	// holds control characters.
	ErrInvalidKey = errors.New("store: invalid idempotency key")
	// ErrInvalidAmount means an amount is zero, negative, or not below 2^53.
	ErrInvalidAmount = errors.New("store: invalid amount")
	// ErrUnknownCurrency means the currency's decimals are not known.
	ErrUnknownCurrency = errors.New("store: unknown currency")
	// ErrTooLarge means a stored response is over the size limit.
	ErrTooLarge = errors.New("store: response too large")
	// ErrInsufficientFunds means a balance does not cover a charge. The
	// returned error is an *InsufficientFundsError carrying the numbers.
	ErrInsufficientFunds = errors.New("store: insufficient funds")
	// ErrReferenceConflict means a credit reference was reused for a
	// different credit.
	ErrReferenceConflict = errors.New("store: credit reference reused with different values")
	// ErrConflict means a unique value (a caller ID or key) is taken.
	ErrConflict = errors.New("store: conflict")
	// ErrInvalidArgument means a parameter is out of range (a zero lease,
	// an empty owner, a negative limit).
	ErrInvalidArgument = errors.New("store: invalid argument")
	// ErrPaymentReused means a per-call payment is bound to another key:
	// one payment pays for one action.
	ErrPaymentReused = errors.New("store: payment already pays for another idempotency key")
	// ErrRevoked means a caller key is revoked: it cannot be rotated.
	ErrRevoked = errors.New("store: key revoked")
	// ErrTooManyKeys means a caller already holds MaxKeysPerCaller valid
	// keys: revoke one before creating another.
	ErrTooManyKeys = errors.New("store: too many keys")
	// ErrQuotaExhausted is ClaimChargeResult.ChargeErr when the claim was
	// won, the free quota's usage had reached its limit and there is no
	// price to fall back to (Amount 0): nothing was taken, and the caller
	// holds the key and must Fail it.
	ErrQuotaExhausted = errors.New("store: free quota exhausted")
)

// answers are the sentinels above: what a store answers about the request,
// as opposed to a failure of the database or of the way to it. A test keeps
// the list equal to the Err variables this file declares, so a new sentinel
// cannot silently be taken for an outage.
var answers = []error{ErrNotFound, ErrFencedOut, ErrFingerprintMismatch, ErrInvalidKey, ErrInvalidAmount,
	ErrUnknownCurrency, ErrTooLarge, ErrInsufficientFunds, ErrReferenceConflict, ErrConflict, ErrInvalidArgument,
	ErrPaymentReused, ErrRevoked, ErrTooManyKeys, ErrQuotaExhausted}

// IsAnswer reports whether err is (or wraps) one of this package's sentinel
// errors: an answer about the request. Anything else a backend returns is a
// failure of the database or of the way to it, worth a retry.
func IsAnswer(err error) bool {
	for _, a := range answers {
		if errors.Is(err, a) {
			return true
		}
	}
	return false
}

// InsufficientFundsError reports a charge the balance could not cover, or
// that was refused because the caller owes money in the currency (Owed > 0,
// after a reversed top-up) until a credit pays the debt.
type InsufficientFundsError struct {
	Currency string
	Balance  int64
	Required int64
	Owed     int64
	// Cap, when set, is the spending cap the charge would have passed (its
	// Spent at the charge): the balance may well cover it.
	Cap *Cap
}

// Error implements error.
func (e *InsufficientFundsError) Error() string {
	if c := e.Cap; c != nil {
		return fmt.Sprintf("store: insufficient funds: %s cap %d %s of key %q spent %d, required %d", c.Reset, c.Limit, e.Currency, c.Key, c.Spent, e.Required)
	}
	if e.Owed > 0 {
		return fmt.Sprintf("store: insufficient funds: %d %s owed, balance %d, required %d", e.Owed, e.Currency, e.Balance, e.Required)
	}
	return fmt.Sprintf("store: insufficient funds: balance %d %s, required %d", e.Balance, e.Currency, e.Required)
}

// Is makes errors.Is(err, ErrInsufficientFunds) true.
func (e *InsufficientFundsError) Is(target error) bool { return target == ErrInsufficientFunds }

// ValidateKey returns ErrInvalidKey unless key is 1..MaxKeyLen bytes of
// printable, non-control characters.
func ValidateKey(key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return ErrInvalidKey
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\uFFFD' {
			return ErrInvalidKey
		}
	}
	return nil
}

// ValidateClaim checks the arguments of Claim and fills in the TTL default.
func ValidateClaim(p *ClaimParams) error {
	if err := ValidateKey(p.Key); err != nil {
		return err
	}
	if p.Owner == "" || p.Fingerprint == "" {
		return fmt.Errorf("%w: owner and fingerprint are required", ErrInvalidArgument)
	}
	if p.TTL == 0 {
		p.TTL = DefaultTTL
	}
	if p.Lease <= 0 || p.TTL <= p.Lease {
		return fmt.Errorf("%w: need 0 < lease < ttl, got lease %s ttl %s", ErrInvalidArgument, p.Lease, p.TTL)
	}
	return nil
}

// ValidateCredit checks the arguments of Credit: ErrInvalidAmount or
// ErrUnknownCurrency for the amount, ErrInvalidArgument for a missing
// caller or reference, or a reference starting with "topup:", which names
// top-up credits (TopupCreditReference), or "x402:", which names payment
// credit-backs (PaymentCreditReference).
func ValidateCredit(p CreditParams) error {
	if err := ValidateAmount(p.Amount, p.Currency); err != nil {
		return err
	}
	if p.Caller == "" || p.Reference == "" {
		return fmt.Errorf("%w: caller and reference are required", ErrInvalidArgument)
	}
	if strings.HasPrefix(p.Reference, "topup:") {
		return fmt.Errorf("%w: credit references starting with topup: are the top-ups'", ErrInvalidArgument)
	}
	if strings.HasPrefix(p.Reference, "x402:") {
		return fmt.Errorf("%w: credit references starting with x402: are the payments' credit-backs", ErrInvalidArgument)
	}
	return nil
}

// ms converts t to the store's time unit, Unix milliseconds.
func ms(t time.Time) int64 { return t.UnixMilli() }

// UnixMilli is the store's time unit: backends persist instants as Unix
// milliseconds, so they compare the same way in Go and in SQL.
func UnixMilli(t time.Time) int64 { return ms(t) }

// FromUnixMilli is the inverse of UnixMilli, in UTC.
func FromUnixMilli(v int64) time.Time { return time.UnixMilli(v).UTC() }
