package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/safejson"
)

// MaxIdempotencyKeyLen is the longest Idempotency-Key accepted, in bytes.
const MaxIdempotencyKeyLen = 255

// ValidateIdempotencyKey returns ErrInvalidIdempotencyKey unless key is
// 1..255 bytes of printable ASCII (0x20-0x7E).
func ValidateIdempotencyKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: the Idempotency-Key header is required", ErrInvalidIdempotencyKey)
	}
	if len(key) > MaxIdempotencyKeyLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidIdempotencyKey, MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("%w: byte %d is not printable ASCII", ErrInvalidIdempotencyKey, i)
		}
	}
	return nil
}

// ParseIdempotencyKey returns the key that the Idempotency-Key header
// values carry, as the IETF draft defines the field: an RFC 8941 sf-string
// ("a quoted string", with \" and \\ escapes). The common bare form
// (order-42, without quotes) is accepted too. No values means no key ("").
//
// One request carries one key. A proxy or the Workers runtime joins repeated
// headers with ", " before the gateway sees them, so a value that is more
// than one member ("a", "b"), or a bare value with a comma, is refused with
// ErrInvalidIdempotencyKey instead of running under the joined key; a key
// that needs a comma is sent quoted. Parameters (;p=1) are refused too. The
// caller then validates the key itself (ValidateIdempotencyKey).
func ParseIdempotencyKey(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", fmt.Errorf("%w: %d Idempotency-Key headers; send one", ErrInvalidIdempotencyKey, len(values))
	}
	v := strings.Trim(values[0], " \t")
	if !strings.HasPrefix(v, `"`) {
		if strings.Contains(v, ",") {
			return "", fmt.Errorf("%w: the value has a comma outside a quoted string, so it may be two Idempotency-Key "+
				"headers joined; send one key, quoted (\"a,b\") if it holds a comma", ErrInvalidIdempotencyKey)
		}
		return v, nil
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			if i+1 < len(v) && (v[i+1] == '"' || v[i+1] == '\\') {
				b.WriteByte(v[i+1])
				i++
				continue
			}
			return "", fmt.Errorf("%w: a quoted key may only escape \" and \\", ErrInvalidIdempotencyKey)
		case '"':
			rest := strings.TrimLeft(v[i+1:], " \t")
			switch {
			case rest == "":
				return b.String(), nil
			case rest[0] == ',':
				return "", fmt.Errorf("%w: the value holds more than one key, so it may be two Idempotency-Key "+
					"headers joined; send one", ErrInvalidIdempotencyKey)
			case rest[0] == ';':
				return "", fmt.Errorf("%w: parameters after the quoted key are not supported", ErrInvalidIdempotencyKey)
			}
			return "", fmt.Errorf("%w: unexpected characters after the quoted key", ErrInvalidIdempotencyKey)
		default:
			if c < 0x20 || c > 0x7e {
				return "", fmt.Errorf("%w: byte %d is not printable ASCII", ErrInvalidIdempotencyKey, i)
			}
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("%w: the quoted key has no closing quote", ErrInvalidIdempotencyKey)
}

// ScopedKey is the store key of (caller, tool, key): "k1:" followed by the
// hex SHA-256 of callerID, tool and key joined by NUL bytes. It is always 67
// bytes, so it fits store.MaxKeyLen whatever the client sent, and two callers
// sending the same key string get different records.
func ScopedKey(callerID, tool, key string) string {
	h := sha256.Sum256([]byte(callerID + "\x00" + tool + "\x00" + key))
	return "k1:" + hex.EncodeToString(h[:])
}

// upstreamKey is the Idempotency-Key sent to the upstream: derived from the
// scoped key only, so every execution of one key (a takeover after a crash, a
// retry after a refund) sends the same value, and the client's key and the
// store key are not revealed.
func upstreamKey(scoped string) string {
	h := sha256.Sum256([]byte("toolgate-upstream\x00" + scoped))
	return "tg-" + hex.EncodeToString(h[:16])
}

// logKey is the hash of the scoped key that log lines carry.
func logKey(scoped string) string {
	h := sha256.Sum256([]byte("toolgate-log\x00" + scoped))
	return hex.EncodeToString(h[:8])
}

// Canonicalize returns the canonical form of a JSON input: one JSON value,
// valid UTF-8, re-encoded without insignificant whitespace, with object keys
// sorted bytewise, string escapes normalised, no HTML escaping, and numbers
// kept as their literal text (so 1 and 1.0 differ). A repeated object key keeps its
// last value. It returns an *InvalidInputError for anything else, including
// an empty body, trailing data, nesting deeper than safejson.MaxDepth and lone
// UTF-16 surrogate escapes (checked before any recursive decoding).
func Canonicalize(input []byte) ([]byte, error) {
	_, canonical, err := decodeInput(input)
	return canonical, err
}

// decodeInput is Canonicalize that also returns the decoded input (numbers
// as json.Number), which the tool's schema is checked against.
func decodeInput(input []byte) (any, []byte, error) {
	if reason := safejson.Check(input, safejson.MaxDepth); reason != "" {
		return nil, nil, &InvalidInputError{Reason: reason}
	}
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, &InvalidInputError{Reason: "the body is empty; send the tool's JSON input"}
		}
		return nil, nil, &InvalidInputError{Reason: "the body is not valid JSON: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, &InvalidInputError{Reason: "the body holds data after the JSON value"}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, nil, &InvalidInputError{Reason: "the body cannot be re-encoded: " + err.Error()}
	}
	return v, bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// checkInput checks the decoded input against the tool's schema (see
// catalog.Tool.Schema): an *InputSchemaError lists what is wrong. It runs
// before the claim, so an invalid input is neither charged, stored nor
// executed.
func checkInput(tool catalog.Tool, input any) error {
	if tool.Schema == nil {
		return nil
	}
	vs, truncated := tool.Schema.Validate(input)
	if len(vs) == 0 {
		return nil
	}
	return &InputSchemaError{Tool: tool.Name, Violations: vs, Truncated: truncated}
}

// Fingerprint identifies a request for the idempotency check: "v1:" and the
// hex SHA-256 of the tool name, a NUL byte and the canonical input (see
// Canonicalize). Two bodies that differ only in whitespace, key order or
// string escapes have the same fingerprint; forwarded headers are not part
// of it.
func Fingerprint(tool string, canonical []byte) string {
	h := sha256.New()
	h.Write([]byte(tool))
	h.Write([]byte{0})
	h.Write(canonical)
	return "v1:" + hex.EncodeToString(h.Sum(nil))
}
