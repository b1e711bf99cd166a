package catalog

import (
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"

	"github.com/toolgate/toolgate-go/store"
)

// DefaultUsageHeader is the response header a metered tool's upstream
// reports its units in, unless the catalog names another.
const DefaultUsageHeader = "Toolgate-Usage"

// Metered is a tool's metered price (catalog "price": {"max", "per",
// "usageHeader"}): a call holds the maximum (Tool.Price) while it runs and
// is charged the units the upstream reports in UsageHeader times Per,
// rounded up to the currency's minor unit, never more than the maximum. A
// 2xx answer without a usable usage header is charged the maximum.
type Metered struct {
	// Per is the price of one unit as written, e.g. "0.001"; it may be
	// finer than the currency's minor unit.
	Per string
	// UsageHeader is the canonical name of the upstream's response header
	// holding the units used.
	UsageHeader string

	// The price of one unit is perNum / 10^perScale minor units.
	perNum   *big.Int
	perScale int
}

// MeteredTerms is how a metered price is published (GET /v1/tools, MCP
// tools/list _meta).
type MeteredTerms struct {
	Max         string `json:"max"`
	Per         string `json:"per"`
	UsageHeader string `json:"usageHeader"`
}

// MeteredTerms returns t's metered price as published, nil for a tool that
// is not metered.
func (t Tool) MeteredTerms() *MeteredTerms {
	if t.Metered == nil {
		return nil
	}
	return &MeteredTerms{Max: t.PriceString(), Per: t.Metered.Per, UsageHeader: t.Metered.UsageHeader}
}

// maxUnitsLen bounds a usage header's value: a plain decimal, at most this
// many characters, so the arithmetic on it stays small.
const maxUnitsLen = 40

// Cost returns what a call of t that used units (the usage header's value)
// costs: the units times the price per unit, rounded up to the minor unit,
// at most the maximum. ok is false, and the cost the maximum, when units is
// missing or not a non-negative plain decimal ("12", "0.5").
func (t Tool) Cost(units string) (amount int64, ok bool) {
	m := t.Metered
	if m == nil {
		return t.Price, false
	}
	u, scale, ok := parseDecimal(strings.TrimSpace(units))
	if !ok {
		return t.Price, false
	}
	// units × per = u × perNum / 10^(scale + perScale), rounded up.
	n := new(big.Int).Mul(u, m.perNum)
	q, r := n.QuoRem(n, pow10(scale+m.perScale), new(big.Int))
	if r.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() || q.Int64() > t.Price {
		return t.Price, true
	}
	return q.Int64(), true
}

// parseDecimal reads a non-negative plain decimal of at most maxUnitsLen
// characters as n / 10^scale.
func parseDecimal(s string) (n *big.Int, scale int, ok bool) {
	if s == "" || len(s) > maxUnitsLen {
		return nil, 0, false
	}
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || (dot && frac == "") || strings.Trim(whole+frac, "0123456789") != "" {
		return nil, 0, false
	}
	n, ok = new(big.Int).SetString(whole+frac, 10)
	return n, len(frac), ok
}

func pow10(n int) *big.Int { return new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil) }

// meteredDoc is the object form of a tool's "price".
type meteredDoc struct {
	Max         string `json:"max"`
	Per         string `json:"per"`
	UsageHeader string `json:"usageHeader"`
}

// parseMetered validates a metered price in currency; errors name the
// field. It returns the maximum in minor units.
func parseMetered(d meteredDoc, currency string) (int64, *Metered, error) {
	if d.Max == "" {
		return 0, nil, errors.New(`price.max is required for a metered price (a decimal string such as "1.00")`)
	}
	max, err := store.ParseAmount(d.Max, currency)
	if err != nil {
		return 0, nil, fmt.Errorf("price.max: %w", err)
	}
	if max <= 0 {
		return 0, nil, errors.New("price.max must be above 0")
	}
	perNum, perScale, ok := parseDecimal(d.Per)
	if !ok || perNum.Sign() <= 0 || len(d.Per) > 30 {
		return 0, nil, fmt.Errorf("price.per %q must be a positive plain decimal, such as \"0.001\"", d.Per)
	}
	dec, err := store.Decimals(currency)
	if err != nil {
		return 0, nil, err
	}
	// In minor units: perNum × 10^dec / 10^perScale, at most max.
	perNum.Mul(perNum, pow10(dec))
	if perNum.Cmp(new(big.Int).Mul(big.NewInt(max), pow10(perScale))) > 0 {
		return 0, nil, fmt.Errorf("price.per %s is above price.max %s", d.Per, d.Max)
	}
	m := &Metered{Per: d.Per, UsageHeader: DefaultUsageHeader, perNum: perNum, perScale: perScale}
	if d.UsageHeader != "" {
		if err := checkHeaderName(d.UsageHeader); err != nil {
			return 0, nil, fmt.Errorf("price.usageHeader: %w", err)
		}
		m.UsageHeader = http.CanonicalHeaderKey(d.UsageHeader)
	}
	return max, m, nil
}
