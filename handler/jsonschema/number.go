package jsonschema

import (
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
)

// decimal is a JSON number held exactly: digits × 10^exp, with digits the
// significant decimal digits (no leading or trailing zeros; "" for zero).
// Numbers are compared and divided as decimals, never through float64, so
// integers beyond 2^53 and literals such as 1.0 or 1e400 are judged
// exactly. The exponent saturates at ±maxExp (far beyond any float64), which
// keeps every magnitude computation in int64.
type decimal struct {
	neg    bool
	digits string
	exp    int64
}

const maxExp = 1 << 40

// parseDecimal reads a JSON number literal (RFC 8259 grammar).
func parseDecimal(s string) (decimal, bool) {
	var d decimal
	i := 0
	if i < len(s) && s[i] == '-' {
		d.neg = true
		i++
	}
	start := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	intPart := s[start:i]
	if intPart == "" || len(intPart) > 1 && intPart[0] == '0' {
		return decimal{}, false
	}
	var frac string
	if i < len(s) && s[i] == '.' {
		i++
		start = i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		frac = s[start:i]
		if frac == "" {
			return decimal{}, false
		}
	}
	var exp int64
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		expNeg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			expNeg = s[i] == '-'
			i++
		}
		start = i
		for i < len(s) && isDigit(s[i]) {
			if exp < maxExp {
				exp = exp*10 + int64(s[i]-'0')
			}
			i++
		}
		if start == i {
			return decimal{}, false
		}
		exp = min(exp, maxExp)
		if expNeg {
			exp = -exp
		}
	}
	if i != len(s) {
		return decimal{}, false
	}
	all := strings.TrimLeft(intPart+frac, "0")
	exp -= int64(len(frac))
	trimmed := strings.TrimRight(all, "0")
	exp += int64(len(all) - len(trimmed))
	d.digits = trimmed
	d.exp = max(min(exp, maxExp), -maxExp)
	if d.digits == "" {
		return decimal{}, true // zero, and -0 is zero
	}
	return d, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// numberOf returns the decimal of a decoded JSON number: a json.Number
// (decoding with UseNumber keeps the literal), or a float64 or int from a
// plain decoder. ok is false for anything else.
func numberOf(v any) (decimal, bool) {
	switch n := v.(type) {
	case json.Number:
		return parseDecimal(string(n))
	case float64:
		return parseDecimal(strconv.FormatFloat(n, 'g', -1, 64))
	case int:
		return parseDecimal(strconv.Itoa(n))
	case int64:
		return parseDecimal(strconv.FormatInt(n, 10))
	}
	return decimal{}, false
}

func (d decimal) sign() int {
	switch {
	case d.digits == "":
		return 0
	case d.neg:
		return -1
	}
	return 1
}

// cmp returns -1, 0 or 1 as d is less than, equal to or greater than o.
func (d decimal) cmp(o decimal) int {
	ds, os := d.sign(), o.sign()
	if ds != os || ds == 0 {
		return compare(int64(ds), int64(os))
	}
	// Same sign, both non-zero: compare magnitudes by the position of the
	// most significant digit, then digit by digit (no trailing zeros, so a
	// string comparison is a numeric one).
	c := compare(int64(len(d.digits))+d.exp, int64(len(o.digits))+o.exp)
	if c == 0 {
		c = strings.Compare(d.digits, o.digits)
	}
	return c * ds
}

func compare(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// isInteger reports whether d has no fractional part (1.0 and 1e3 do).
func (d decimal) isInteger() bool { return d.digits == "" || d.exp >= 0 }

// multipleOf reports whether d is an integer multiple of m (m > 0), exactly.
// With d = a×10^ea and m = b×10^eb (a, b without trailing zeros): if ea < eb,
// d/m = a / (b×10^(eb-ea)) is not an integer, since a is not a multiple of
// 10; otherwise it is one iff a × 10^(ea-eb) ≡ 0 (mod b), computed with a
// modular power and a digit-streamed remainder, so neither a huge exponent
// nor a long literal costs more than linear work.
func (d decimal) multipleOf(m decimal) bool {
	if d.digits == "" {
		return true
	}
	if d.exp < m.exp {
		return false
	}
	b, _ := new(big.Int).SetString(m.digits, 10)
	r := modDigits(d.digits, b)
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(d.exp-m.exp), b)
	r.Mul(r, p).Mod(r, b)
	return r.Sign() == 0
}

// modDigits returns digits (decimal) mod b, reading 18 digits at a time.
func modDigits(digits string, b *big.Int) *big.Int {
	r, chunk, scale := new(big.Int), new(big.Int), new(big.Int)
	for len(digits) > 0 {
		n := min(len(digits), 18)
		v, _ := strconv.ParseUint(digits[:n], 10, 64)
		scale.Exp(big.NewInt(10), big.NewInt(int64(n)), nil)
		r.Mul(r, scale).Add(r, chunk.SetUint64(v)).Mod(r, b)
		digits = digits[n:]
	}
	return r
}

// String renders d in the shortest plain form: 12, -0.5, 1.5e+400.
func (d decimal) String() string {
	if d.digits == "" {
		return "0"
	}
	var sb strings.Builder
	if d.neg {
		sb.WriteByte('-')
	}
	switch {
	case d.exp >= 0 && d.exp <= 21:
		sb.WriteString(d.digits)
		sb.WriteString(strings.Repeat("0", int(d.exp)))
	case d.exp < 0 && -d.exp < int64(len(d.digits)):
		k := len(d.digits) + int(d.exp)
		sb.WriteString(d.digits[:k] + "." + d.digits[k:])
	case d.exp < 0 && -d.exp <= int64(len(d.digits))+6:
		sb.WriteString("0." + strings.Repeat("0", int(-d.exp)-len(d.digits)) + d.digits)
	default:
		sb.WriteString(d.digits[:1])
		if len(d.digits) > 1 {
			sb.WriteString("." + d.digits[1:])
		}
		sb.WriteString("e" + strconv.FormatInt(d.exp+int64(len(d.digits))-1, 10))
	}
	return sb.String()
}
