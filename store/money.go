package store

import (
	"fmt"
	"math"
	"strings"
)

// MaxAmount is the largest amount or balance, 2^53-1 minor units: D1 hands
// numbers to Go as float64, which is exact only below 2^53.
const MaxAmount int64 = 1<<53 - 1

// currencyDecimals lists the currencies whose minor unit is known.
var currencyDecimals = map[string]int{
	"USD":    2,
	"EUR":    2,
	"GBP":    2,
	"CHF":    2,
	"CAD":    2,
	"AUD":    2,
	"JPY":    0,
	"USDC":   6,
	"CREDIT": 0,
}

// Decimals returns how many decimal places currency's minor unit has, or
// ErrUnknownCurrency.
func Decimals(currency string) (int, error) {
	d, ok := currencyDecimals[currency]
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnknownCurrency, currency)
	}
	return d, nil
}

// ValidateAmount returns ErrInvalidAmount unless 0 < amount <= MaxAmount,
// and ErrUnknownCurrency for a currency without known decimals.
func ValidateAmount(amount int64, currency string) error {
	if _, err := Decimals(currency); err != nil {
		return err
	}
	if amount <= 0 || amount > MaxAmount {
		return fmt.Errorf("%w: %d", ErrInvalidAmount, amount)
	}
	return nil
}

// ParseAmount converts a decimal string such as "0.05" into minor units of
// currency. It rejects signs, exponents, more decimals than the currency has,
// and values over MaxAmount. Zero is accepted (a free tool).
func ParseAmount(s, currency string) (int64, error) {
	dec, err := Decimals(currency)
	if err != nil {
		return 0, err
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || (hasDot && frac == "") || len(frac) > dec {
		return 0, fmt.Errorf("%w: %q is not an amount with at most %d decimals", ErrInvalidAmount, s, dec)
	}
	frac += strings.Repeat("0", dec-len(frac))
	var v int64
	for _, c := range whole + frac {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %q is not a plain decimal", ErrInvalidAmount, s)
		}
		if v > (math.MaxInt64-9)/10 {
			return 0, fmt.Errorf("%w: %q is too large", ErrInvalidAmount, s)
		}
		v = v*10 + int64(c-'0')
	}
	if v > MaxAmount {
		return 0, fmt.Errorf("%w: %q is too large", ErrInvalidAmount, s)
	}
	return v, nil
}

// FormatAmount renders minor units of currency as a decimal string. It
// falls back to the plain integer for an unknown currency.
func FormatAmount(v int64, currency string) string {
	dec, err := Decimals(currency)
	neg := v < 0
	if neg {
		v = -v
	}
	s := fmt.Sprintf("%d", v)
	if err == nil && dec > 0 {
		if len(s) <= dec {
			s = strings.Repeat("0", dec-len(s)+1) + s
		}
		s = s[:len(s)-dec] + "." + s[len(s)-dec:]
	}
	if neg {
		s = "-" + s
	}
	return s
}
