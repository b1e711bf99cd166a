// Package safejson checks JSON that comes from outside (callers, upstreams, configuration) before any
// recursive decoder sees it. In WebAssembly a deep recursion overflows the JavaScript engine's stack and kills
// the whole Go runtime of an isolate, which recover cannot catch; these checks are one non-recursive pass.
package safejson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of arrays and objects that toolgate
// accepts in JSON from outside: request bodies (REST, MCP, admin) and
// upstream answers. Go's encoding/json allows 10,000 levels, but its decoder
// recurses once per level, and in WebAssembly a deep recursion overflows the
// JavaScript engine's stack, which kills the whole Go runtime of an isolate
// (every request in flight on it) and cannot be recovered. 128 levels is far
// below what the wasm stack allows and far above what a tool input needs.
const MaxDepth = 128

// Check reports, without recursion, why b is not JSON that toolgate may
// decode: invalid UTF-8, arrays and objects nested deeper than maxDepth, or a
// string escape that is a lone UTF-16 surrogate (\ud800 without its pair, or
// \udc00 alone), which RFC 7493 (I-JSON) forbids and which decoders would
// silently turn into U+FFFD. It returns "" for anything else, including
// malformed JSON: the decoder that runs next reports that.
//
// It is one pass over the bytes and allocates nothing, so it is safe to run
// on any input before the recursive decoder sees it.
func Check(b []byte, maxDepth int) string {
	if !utf8.Valid(b) {
		return "the body is not valid UTF-8"
	}
	_, reason := scanJSON(b, maxDepth)
	return reason
}

// TooDeep reports whether b nests arrays and objects deeper than maxDepth
// (strings are skipped, nothing else is checked).
func TooDeep(b []byte, maxDepth int) bool {
	deep, _ := scanJSON(b, maxDepth)
	return deep
}

func scanJSON(b []byte, maxDepth int) (deep bool, reason string) {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '[', '{':
			depth++
			if depth > maxDepth {
				return true, fmt.Sprintf("the JSON nests arrays and objects deeper than %d levels", maxDepth)
			}
		case ']', '}':
			depth--
		case '"':
			end, reason := scanString(b, i+1)
			if reason != "" {
				return false, reason
			}
			i = end
		}
	}
	return false, ""
}

// scanString scans the string whose contents start at b[i] and returns the
// index of its closing quote (len(b) if there is none), or why one of its
// escapes is refused.
func scanString(b []byte, i int) (int, string) {
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			return i, ""
		case '\\':
			if i+1 < len(b) && b[i+1] == 'u' {
				r, ok := hex4(b, i+2)
				switch {
				case !ok:
					// Malformed: the decoder reports it.
				case r >= 0xdc00 && r <= 0xdfff:
					return 0, fmt.Sprintf("the JSON holds a lone low surrogate \\u%04x (not a Unicode character; RFC 7493)", r)
				case r >= 0xd800 && r <= 0xdbff:
					lo, ok := rune(0), false
					if i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
						lo, ok = hex4(b, i+8)
					}
					if !ok || lo < 0xdc00 || lo > 0xdfff {
						return 0, fmt.Sprintf("the JSON holds a lone high surrogate \\u%04x (not a Unicode character; RFC 7493)", r)
					}
					i += 6 // the pair's second half
				}
				i += 5
				continue
			}
			i++ // the escaped character
		}
	}
	return len(b), ""
}

// hex4 reads four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// DecodeStrict decodes exactly one JSON value into v, refusing unknown
// fields, trailing data, nesting deeper than MaxDepth and lone surrogate
// escapes (checked first, without recursion).
func DecodeStrict(data []byte, v any) error {
	if reason := Check(data, MaxDepth); reason != "" {
		return errors.New(reason)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// MarshalNoEscape is json.Marshal without HTML escaping (<, >, & stay as
// they are), the encoding of every answer the gateway stores or sends.
func MarshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
