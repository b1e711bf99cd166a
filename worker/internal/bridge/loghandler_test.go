package bridge

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// marshalingError is an error that is also a json.Marshaler: slog.JSONHandler marshals it.
type marshalingError struct{}

func (marshalingError) Error() string                { return "as text" }
func (marshalingError) MarshalJSON() ([]byte, error) { return []byte(`{"as":"json"}`), nil }

type lazy struct{ v slog.Value }

func (l lazy) LogValue() slog.Value { return l.v }

// lines returns what NewJSONHandler and slog.NewJSONHandler write for r under opts.
func lines(t *testing.T, opts *slog.HandlerOptions, r slog.Record) (got, want string) {
	t.Helper()
	var g, w bytes.Buffer
	require.NoError(t, NewJSONHandler(&g, opts).Handle(context.Background(), r.Clone()))
	require.NoError(t, slog.NewJSONHandler(&w, opts).Handle(context.Background(), r.Clone()))
	return g.String(), w.String()
}

func TestJSONHandlerWritesWhatSlogWrites(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 1, 12, 30, 45, 123456789, time.UTC)
	zone := time.FixedZone("", -(3*3600 + 30*60))
	tests := map[string]struct {
		time  time.Time
		level slog.Level
		msg   string
		attrs []slog.Attr
		fast  bool // NewJSONHandler writes it itself, without slog.JSONHandler
	}{
		"a call's line": {time: at, msg: "call", fast: true, attrs: []slog.Attr{
			slog.String("key", "k_3f2a"), slog.String("caller", "acme"), slog.String("tool", "search"),
			slog.String("outcome", "executed"), slog.String("amount", "0.01"), slog.String("currency", "USD"),
			slog.Int("status", 200), slog.Float64("durationMs", 12.345), slog.Int64("roundTrips", 3)}},
		"a failed call": {time: at, level: slog.LevelError, msg: "call", fast: true, attrs: []slog.Attr{
			slog.Int("status", 502), slog.Any("error", errors.New(`upstream: "bad" <gateway> & co`))}},
		"no time":          {msg: "m", fast: true},
		"a monotonic time": {time: time.Now(), msg: "m", fast: true},
		"a time in a zone": {time: at.In(zone), msg: "m", fast: true, attrs: []slog.Attr{slog.Time("t", at.In(zone)),
			slog.Time("whole", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), slog.Time("zero", time.Time{})}},
		"a level":          {time: at, level: slog.LevelDebug + 2, msg: "m", fast: true},
		"a json.Marshaler": {time: at, msg: "m", attrs: []slog.Attr{slog.Any("level", slog.LevelWarn)}},
		"escapes": {time: at, msg: "quote \" backslash \\ nl \n cr \r tab \t nul \x00 us \x1f del \x7f", fast: true,
			attrs: []slog.Attr{slog.String("bad utf-8 \xff", "a\xc3(b\xe2\x82"), slog.String("seps", "a\u2028b\u2029c"),
				slog.String("unicode", "héllo 世界 😀 <>&'"), slog.String("", "empty key")}},
		"numbers": {time: at, msg: "m", fast: true, attrs: []slog.Attr{
			slog.Int64("min", math.MinInt64), slog.Int64("max", math.MaxInt64), slog.Uint64("u", math.MaxUint64),
			slog.Float64("zero", 0), slog.Float64("negzero", math.Copysign(0, -1)), slog.Float64("half", 0.5),
			slog.Float64("tiny", 1e-7), slog.Float64("small", 1e-6), slog.Float64("big", 1e21), slog.Float64("below", 1e20),
			slog.Float64("neg", -123456.789), slog.Float64("e-300", 1e-300), slog.Float64("max", math.MaxFloat64),
			slog.Float64("smallest", math.SmallestNonzeroFloat64), slog.Float64("ms", float64(1234567)/1000)}},
		"bools and durations": {time: at, msg: "m", fast: true, attrs: []slog.Attr{slog.Bool("t", true),
			slog.Bool("f", false), slog.Duration("d", 1500*time.Millisecond), slog.Duration("neg", -time.Nanosecond)}},
		"a LogValuer":      {time: at, msg: "m", fast: true, attrs: []slog.Attr{slog.Any("lazy", lazy{slog.IntValue(7)})}},
		"an empty attr":    {time: at, msg: "m", fast: true, attrs: []slog.Attr{{}, slog.String("after", "x")}},
		"a group":          {time: at, msg: "m", attrs: []slog.Attr{slog.Group("g", slog.Int("a", 1), slog.String("b", "x"))}},
		"an empty group":   {time: at, msg: "m", fast: true, attrs: []slog.Attr{slog.String("a", "1"), slog.Group("g")}}, // AddAttrs drops it
		"a map":            {time: at, msg: "m", attrs: []slog.Attr{slog.Any("m", map[string]int{"a": 1})}},
		"a JSON error":     {time: at, msg: "m", attrs: []slog.Attr{slog.Any("err", marshalingError{})}},
		"NaN":              {time: at, msg: "m", attrs: []slog.Attr{slog.Float64("nan", math.NaN())}},
		"infinity":         {time: at, msg: "m", attrs: []slog.Attr{slog.Float64("inf", math.Inf(-1))}},
		"a year past 9999": {time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), msg: "m"},
		"an attr year before 0": {time: at, msg: "m", attrs: []slog.Attr{
			slog.Time("t", time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC))}},
		"a LogValuer of a group": {time: at, msg: "m", attrs: []slog.Attr{
			slog.Any("lazy", lazy{slog.GroupValue(slog.Int("a", 1))})}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := slog.NewRecord(tc.time, tc.level, tc.msg, 0)
			r.AddAttrs(tc.attrs...)
			got, want := lines(t, nil, r)
			require.Equal(t, want, got)
			require.Equal(t, 1, strings.Count(got, "\n"))

			// Whether it wrote the line itself: only then does it write with no slog.JSONHandler.
			var b bytes.Buffer
			h := NewJSONHandler(&b, nil).(*jsonHandler)
			h.std = nil // a fallback would panic
			fast := func() (ok bool) {
				defer func() { ok = recover() == nil }()
				_ = h.Handle(context.Background(), r)
				return true
			}()
			require.Equal(t, tc.fast, fast)
			if fast {
				require.Equal(t, want, b.String())
			}
		})
	}
}

func TestJSONHandlerRandomValues(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "é", "世", "😀", "\"", "\\", "\n", "\x01", "\x7f", "\xff", "\xe2\x82", "\u2028", "<", "&", " "}
	for range 2000 {
		var s strings.Builder
		for range rng.IntN(12) {
			s.WriteString(pieces[rng.IntN(len(pieces))])
		}
		f := math.Float64frombits(rng.Uint64())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			f = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(60)-30))
		}
		at := time.Unix(rng.Int64N(1e11), rng.Int64N(1e9)).In(time.FixedZone("", (rng.IntN(49)-24)*1800))
		r := slog.NewRecord(at, slog.Level(rng.IntN(20)-8), s.String(), 0)
		r.AddAttrs(slog.String(s.String(), s.String()), slog.Float64("f", f), slog.Int64("i", rng.Int64()),
			slog.Float64("ms", float64(rng.IntN(1e7))/1000))
		got, want := lines(t, nil, r)
		require.Equal(t, want, got)
	}
}

func TestJSONHandlerOptions(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 1, 12, 30, 45, 0, time.UTC)
	r := slog.NewRecord(at, slog.LevelInfo, "m", 0)
	r.AddAttrs(slog.String("a", "x"))

	t.Run("level", func(t *testing.T) {
		t.Parallel()
		h := NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelWarn})
		require.False(t, h.Enabled(context.Background(), slog.LevelInfo))
		require.True(t, h.Enabled(context.Background(), slog.LevelWarn))
		require.True(t, NewJSONHandler(&bytes.Buffer{}, nil).Enabled(context.Background(), slog.LevelInfo))
		require.False(t, NewJSONHandler(&bytes.Buffer{}, nil).Enabled(context.Background(), slog.LevelDebug))
	})
	t.Run("ReplaceAttr", func(t *testing.T) {
		t.Parallel()
		opts := &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == "a" {
				a.Value = slog.StringValue("replaced")
			}
			return a
		}}
		got, want := lines(t, opts, r)
		require.Equal(t, want, got)
		require.Contains(t, got, `"a":"replaced"`)
	})
	t.Run("WithAttrs and WithGroup", func(t *testing.T) {
		t.Parallel()
		var g, w bytes.Buffer
		gh := NewJSONHandler(&g, nil).WithAttrs([]slog.Attr{slog.Int("n", 1)}).WithGroup("grp")
		wh := slog.NewJSONHandler(&w, nil).WithAttrs([]slog.Attr{slog.Int("n", 1)}).WithGroup("grp")
		require.NoError(t, gh.Handle(context.Background(), r))
		require.NoError(t, wh.Handle(context.Background(), r))
		require.Equal(t, w.String(), g.String())
		require.Contains(t, g.String(), `"grp":{"a":"x"}`)
	})
}

func BenchmarkJSONHandler(b *testing.B) {
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "call", 0)
	r.AddAttrs(slog.String("key", "k_3f2a"), slog.String("caller", "acme"), slog.String("tool", "search"),
		slog.String("outcome", "executed"), slog.String("amount", "0.01"), slog.String("currency", "USD"),
		slog.Int("status", 200), slog.Float64("durationMs", 12.345), slog.Int64("roundTrips", 3))
	for name, h := range map[string]slog.Handler{
		"bridge": NewJSONHandler(discard{}, nil),
		"slog":   slog.NewJSONHandler(discard{}, nil),
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				_ = h.Handle(context.Background(), r)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
