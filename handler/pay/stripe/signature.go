// Package stripe is the Stripe top-up rail's wire layer: it verifies the
// Stripe-Signature header of webhook deliveries, decodes the events a top-up
// needs (Checkout Sessions, refunded charges, disputes), encodes the form
// that creates a Checkout Session, with the Idempotency-Key that goes with it,
// and sends it (Client, over an injected send function: the worker's fetch).
// It is small and ours on purpose: stripe-go's webhook package alone adds about
// 0.86 MB gzip to the wasm, so stripe-go is a test-only dependency that checks
// this code signs and verifies exactly as Stripe does.
//
// Verification and decoding are two calls, Verify and ParseEvent, because a
// webhook route must refuse an unsigned body before it decodes anything from
// it, and must tell the sender which of the two failed (each has its own
// sentinel errors, all answered 400). ParseEvent alone also decodes events
// that came from elsewhere, for example Stripe's API in a test.
//
// Still to come (issue 12): the routes (POST /v1/topups, GET /v1/topups/{id},
// POST /v1/webhooks/stripe), which send the form through the worker's fetch
// seam; store tables keyed by caller for top-ups and processed event ids; the
// credit and the event dedupe in one atomic batch, referenced by the Checkout
// Session id; and reversal entries for refunds and disputes. Tests run the
// Client against Stripe's official mock server and sign events as Stripe
// does, through ./stripemock (test-only).
//
// This package imports nothing of the engine or of a surface (see
// handler/layout_test.go): rails never move money themselves.
package stripe

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultTolerance is how far a signature's timestamp may be from now, in the
// past or in the future, when Verify is given a tolerance of zero or less:
// Stripe's own libraries use five minutes.
const DefaultTolerance = 300 * time.Second

// MaxHeaderBytes is the longest Stripe-Signature header that is parsed. A
// real one (a timestamp, one v1 and one v0 signature) is about 150 bytes, and
// a few hundred more during a secret rotation.
const MaxHeaderBytes = 2048

// MaxSignatures is the most v1 signatures one header may carry. Stripe sends
// one per active endpoint secret: two while a secret is being rolled.
const MaxSignatures = 8

// Errors of Verify and ParseHeader. Each is a distinct reason for a webhook
// route to answer 400; ErrNoSecret is a configuration error instead.
var (
	// ErrMissingHeader: the request has no Stripe-Signature header.
	ErrMissingHeader = errors.New("stripe: no Stripe-Signature header")
	// ErrMalformedHeader: the header is too long, carries too many v1
	// signatures, has no timestamp or two, or an item that is not key=value,
	// a timestamp that is not a positive decimal, or a v1 signature that is not
	// 64 hexadecimal digits.
	ErrMalformedHeader = errors.New("stripe: malformed Stripe-Signature header")
	// ErrNoMatchingSignature: no v1 signature of the header (possibly none:
	// other schemes such as v0 are ignored) matches the body under any secret.
	ErrNoMatchingSignature = errors.New("stripe: no v1 signature matches the body")
	// ErrTimestampOutsideTolerance: the signature matches, but its timestamp
	// is further from now than the tolerance, in the past (a replay) or in
	// the future.
	ErrTimestampOutsideTolerance = errors.New("stripe: signature timestamp outside the tolerance")
	// ErrNoSecret: Verify was given no non-empty secret to check against.
	ErrNoSecret = errors.New("stripe: no webhook secret configured")
)

// SignatureHeader is a parsed Stripe-Signature header: its timestamp and its
// v1 signatures, in header order. Items of other schemes are dropped.
type SignatureHeader struct {
	Timestamp int64
	V1        [][]byte
}

// String encodes h the way Stripe writes the header: t first, then every v1.
func (h SignatureHeader) String() string {
	var b strings.Builder
	b.WriteString("t=")
	b.WriteString(strconv.FormatInt(h.Timestamp, 10))
	for _, s := range h.V1 {
		b.WriteString(",v1=")
		b.WriteString(hex.EncodeToString(s))
	}
	return b.String()
}

// ParseHeader parses a Stripe-Signature header,
// "t=<unix seconds>,v1=<hex>[,v1=<hex>...]", in which items of other schemes
// (v0, or any other key) are ignored. Items are taken as they are, without
// trimming spaces: Stripe writes none. It returns ErrMissingHeader for an
// empty header and ErrMalformedHeader (wrapped, with the reason) for anything
// else it refuses; a header without any v1 signature is well formed and
// parses to an empty V1.
func ParseHeader(header string) (SignatureHeader, error) {
	var h SignatureHeader
	if header == "" {
		return h, ErrMissingHeader
	}
	if len(header) > MaxHeaderBytes {
		return h, malformed("longer than %d bytes", MaxHeaderBytes)
	}
	seenT := false
	for item := range strings.SplitSeq(header, ",") {
		key, value, ok := strings.Cut(item, "=")
		if !ok || key == "" {
			return h, malformed("item %q is not key=value", item)
		}
		switch key {
		case "t":
			if seenT {
				return h, malformed("two timestamps")
			}
			seenT = true
			ts, err := parseTimestamp(value)
			if err != nil {
				return h, err
			}
			h.Timestamp = ts
		case "v1":
			if len(h.V1) == MaxSignatures {
				return h, malformed("more than %d v1 signatures", MaxSignatures)
			}
			if len(value) != 2*sha256.Size {
				return h, malformed("a v1 signature is not %d hexadecimal digits", 2*sha256.Size)
			}
			sig, err := hex.DecodeString(value)
			if err != nil {
				return h, malformed("a v1 signature is not hexadecimal")
			}
			h.V1 = append(h.V1, sig)
		}
	}
	if !seenT {
		return h, malformed("no timestamp")
	}
	return h, nil
}

// parseTimestamp accepts a positive decimal without sign or leading zeros, so
// that an accepted timestamp has exactly one spelling.
func parseTimestamp(s string) (int64, error) {
	if s == "" || s[0] == '0' {
		return 0, malformed("the timestamp is not a positive decimal")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, malformed("the timestamp is not a positive decimal")
		}
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, malformed("the timestamp is out of range")
	}
	return ts, nil
}

func malformed(format string, args ...any) error {
	return &headerError{reason: fmt.Sprintf(format, args...)}
}

// headerError carries the reason a header was refused; it is
// ErrMalformedHeader for errors.Is.
type headerError struct{ reason string }

func (e *headerError) Error() string        { return ErrMalformedHeader.Error() + ": " + e.reason }
func (e *headerError) Is(target error) bool { return target == ErrMalformedHeader }

// Verify checks that header is a valid Stripe-Signature for body: some v1
// signature equals HMAC-SHA256(secret, t + "." + body) for some non-empty
// secret (several during a rotation), and t is within tolerance of now in
// either direction (DefaultTolerance if tolerance <= 0). Every v1 signature is
// compared with every secret, each in constant time. It returns
// ErrMissingHeader, ErrMalformedHeader, ErrNoMatchingSignature,
// ErrTimestampOutsideTolerance (checked after the signature, so it is only
// reported for a body Stripe really signed), or ErrNoSecret.
func Verify(header string, body []byte, secrets []string, now time.Time, tolerance time.Duration) error {
	h, err := ParseHeader(header)
	if err != nil {
		return err
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	haveSecret := false
	matched := false
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		haveSecret = true
		want := Sign(secret, h.Timestamp, body)
		for _, sig := range h.V1 {
			if hmac.Equal(want, sig) {
				matched = true
			}
		}
	}
	if !haveSecret {
		return ErrNoSecret
	}
	if !matched {
		return ErrNoMatchingSignature
	}
	age := now.Sub(time.Unix(h.Timestamp, 0))
	if age > tolerance || age < -tolerance {
		return ErrTimestampOutsideTolerance
	}
	return nil
}

// Sign returns the v1 signature of body at the Unix time ts under secret:
// HMAC-SHA256(secret, ts + "." + body). It cannot fail.
func Sign(secret string, ts int64, body []byte) []byte {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(ts, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}
