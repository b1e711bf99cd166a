package bridge

import (
	"context"
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// NewJSONHandler returns a slog.Handler that writes exactly what slog.NewJSONHandler(w, opts) writes,
// a line per record, each with one Write, but that appends the line itself for the kinds of values a
// call's log line holds: strings, integers, finite floats, bools, durations, times (years 0 to 9999)
// and errors. A record holding anything else (a group, any other value), and every record of a handler
// derived with WithAttrs or WithGroup or built with ReplaceAttr or AddSource, goes to
// slog.JSONHandler. In wasm, slog.JSONHandler costs about as much as the rest of a call's Go code
// outside the engine: it formats every float through encoding/json's reflection.
func NewJSONHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	std := slog.NewJSONHandler(w, opts)
	if opts.ReplaceAttr != nil || opts.AddSource {
		return std
	}
	return &jsonHandler{w: w, level: opts.Level, std: std}
}

type jsonHandler struct {
	mu    sync.Mutex
	w     io.Writer
	level slog.Leveler // nil: slog.LevelInfo
	std   *slog.JSONHandler
}

func (h *jsonHandler) Enabled(_ context.Context, l slog.Level) bool {
	min := slog.LevelInfo
	if h.level != nil {
		min = h.level.Level()
	}
	return l >= min
}

func (h *jsonHandler) WithAttrs(as []slog.Attr) slog.Handler { return h.std.WithAttrs(as) }
func (h *jsonHandler) WithGroup(name string) slog.Handler    { return h.std.WithGroup(name) }

func (h *jsonHandler) Handle(ctx context.Context, r slog.Record) error {
	b := make([]byte, 0, 512)
	b = append(b, '{')
	if !r.Time.IsZero() {
		var ok bool
		if b, ok = appendLogTime(append(b, `"time":`...), r.Time); !ok {
			return h.std.Handle(ctx, r)
		}
		b = append(b, ',')
	}
	b = append(b, `"level":`...)
	b = appendLogString(b, r.Level.String())
	b = append(b, `,"msg":`...)
	b = appendLogString(b, r.Message)
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		b, ok = appendLogAttr(b, a)
		return ok
	})
	if !ok {
		return h.std.Handle(ctx, r)
	}
	b = append(b, '}', '\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(b)
	return err
}

// appendLogAttr appends ,"key":value as slog.JSONHandler does, or reports false for what it leaves to
// slog.JSONHandler.
func appendLogAttr(b []byte, a slog.Attr) ([]byte, bool) {
	a.Value = a.Value.Resolve()
	if a.Key == "" && a.Value.Kind() == slog.KindAny && a.Value.Any() == nil {
		return b, true // empty: elided, as slog.JSONHandler does
	}
	b = append(b, ',')
	b = appendLogString(b, a.Key)
	b = append(b, ':')
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		return appendLogString(b, v.String()), true
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10), true
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10), true
	case slog.KindFloat64:
		return appendLogFloat(b, v.Float64())
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool()), true
	case slog.KindDuration:
		return strconv.AppendInt(b, int64(v.Duration()), 10), true
	case slog.KindTime:
		return appendLogTime(b, v.Time())
	case slog.KindAny:
		if err, isErr := v.Any().(error); isErr {
			if _, marshals := err.(interface{ MarshalJSON() ([]byte, error) }); !marshals {
				return appendLogString(b, err.Error()), true
			}
		}
	}
	return b, false
}

// appendLogTime appends t as slog.JSONHandler does (RFC 3339 with nanoseconds, quoted), or reports false
// for a year it flags as an error.
func appendLogTime(b []byte, t time.Time) ([]byte, bool) {
	if y := t.Year(); y < 0 || y >= 10000 {
		return b, false
	}
	b = append(b, '"')
	b = t.Round(0).AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), true
}

// appendLogFloat appends f as encoding/json does (which slog.JSONHandler calls), or reports false for
// NaN and infinities, which it cannot encode.
func appendLogFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if n := len(b); format == 'e' && n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
		b[n-2] = b[n-1] // e-09 becomes e-9
		b = b[:n-1]
	}
	return b, true
}

// appendLogString appends s quoted as slog.JSONHandler does: like encoding/json without HTML escaping,
// invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendLogString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
