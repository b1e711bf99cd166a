package handler

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
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
// an empty body and trailing data.
func Canonicalize(input []byte) ([]byte, error) {
	if !utf8.Valid(input) {
		return nil, &InvalidInputError{Reason: "the body is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &InvalidInputError{Reason: "the body is empty; send the tool's JSON input"}
		}
		return nil, &InvalidInputError{Reason: "the body is not valid JSON: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &InvalidInputError{Reason: "the body holds data after the JSON value"}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, &InvalidInputError{Reason: "the body cannot be re-encoded: " + err.Error()}
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
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
