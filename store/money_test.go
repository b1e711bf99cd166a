package store_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

func TestParseAmount(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		in, currency string
		want         int64
		err          error
	}{
		"cents":              {"0.05", "USD", 5, nil},
		"whole":              {"12", "USD", 1200, nil},
		"one decimal":        {"1.5", "EUR", 150, nil},
		"zero is free":       {"0", "USD", 0, nil},
		"no decimals":        {"100", "JPY", 100, nil},
		"six decimals":       {"0.000001", "USDC", 1, nil},
		"max":                {"90071992547409.91", "USD", store.MaxAmount, nil},
		"over max":           {"90071992547409.92", "USD", 0, store.ErrInvalidAmount},
		"overflow int64":     {"99999999999999999999", "USD", 0, store.ErrInvalidAmount},
		"too many decimals":  {"0.001", "USD", 0, store.ErrInvalidAmount},
		"decimals on JPY":    {"1.0", "JPY", 0, store.ErrInvalidAmount},
		"negative":           {"-1", "USD", 0, store.ErrInvalidAmount},
		"plus sign":          {"+1", "USD", 0, store.ErrInvalidAmount},
		"exponent":           {"1e2", "USD", 0, store.ErrInvalidAmount},
		"empty":              {"", "USD", 0, store.ErrInvalidAmount},
		"dot only":           {".", "USD", 0, store.ErrInvalidAmount},
		"leading dot":        {".5", "USD", 0, store.ErrInvalidAmount},
		"trailing dot":       {"5.", "USD", 0, store.ErrInvalidAmount},
		"space":              {" 5", "USD", 0, store.ErrInvalidAmount},
		"unknown currency":   {"1", "XYZ", 0, store.ErrUnknownCurrency},
		"lowercase currency": {"1", "usd", 0, store.ErrUnknownCurrency},
	} {
		got, err := store.ParseAmount(tc.in, tc.currency)
		if tc.err != nil {
			require.ErrorIs(t, err, tc.err, name)
			continue
		}
		require.NoError(t, err, name)
		require.Equal(t, tc.want, got, name)
	}
}

func TestFormatAmount(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v        int64
		currency string
		want     string
	}{
		{5, "USD", "0.05"}, {0, "USD", "0.00"}, {1200, "USD", "12.00"}, {-5, "USD", "-0.05"},
		{100, "JPY", "100"}, {1, "USDC", "0.000001"}, {store.MaxAmount, "USD", "90071992547409.91"},
		{42, "XYZ", "42"},
	} {
		require.Equal(t, tc.want, store.FormatAmount(tc.v, tc.currency), "%d %s", tc.v, tc.currency)
	}
}

func TestValidateAmount(t *testing.T) {
	t.Parallel()
	require.NoError(t, store.ValidateAmount(1, "USD"))
	require.NoError(t, store.ValidateAmount(store.MaxAmount, "USD"))
	require.ErrorIs(t, store.ValidateAmount(0, "USD"), store.ErrInvalidAmount)
	require.ErrorIs(t, store.ValidateAmount(-1, "USD"), store.ErrInvalidAmount)
	require.ErrorIs(t, store.ValidateAmount(store.MaxAmount+1, "USD"), store.ErrInvalidAmount)
	require.ErrorIs(t, store.ValidateAmount(1, "XYZ"), store.ErrUnknownCurrency)
	// MaxAmount is exact as a float64, as D1 hands numbers back.
	require.Equal(t, store.MaxAmount, int64(float64(store.MaxAmount)))
	require.NotEqual(t, int64(math.Pow(2, 53))+1, int64(float64(int64(math.Pow(2, 53))+1)))
}

// FuzzAmountRoundTrip: every amount in range formats to a string that parses
// back to itself, and every string that parses formats back to its canonical
// spelling.
func FuzzAmountRoundTrip(f *testing.F) {
	for _, v := range []int64{0, 1, 5, 99, 100, 1234567, store.MaxAmount} {
		f.Add(v, "USD", "0.05")
	}
	f.Add(int64(7), "USDC", "1.000001")
	f.Add(int64(7), "JPY", "007")
	f.Fuzz(func(t *testing.T, v int64, currency, s string) {
		if _, err := store.Decimals(currency); err != nil {
			return
		}
		if v >= 0 && v <= store.MaxAmount {
			got, err := store.ParseAmount(store.FormatAmount(v, currency), currency)
			require.NoError(t, err)
			require.Equal(t, v, got)
		}
		if p, err := store.ParseAmount(s, currency); err == nil {
			require.GreaterOrEqual(t, p, int64(0))
			require.LessOrEqual(t, p, store.MaxAmount)
			again, err := store.ParseAmount(store.FormatAmount(p, currency), currency)
			require.NoError(t, err)
			require.Equal(t, p, again)
		}
	})
}
