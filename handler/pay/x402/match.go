package x402

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors of Matches, each carried by a *MismatchError that names the field.
var (
	ErrSchemeMismatch   = errors.New("x402: payment scheme does not match")
	ErrNetworkMismatch  = errors.New("x402: payment network does not match")
	ErrAssetMismatch    = errors.New("x402: payment asset does not match")
	ErrPayToMismatch    = errors.New("x402: payment recipient does not match")
	ErrAmountBelowPrice = errors.New("x402: payment amount is below the price")
	ErrNotYetValid      = errors.New("x402: payment authorization is not valid yet")
	ErrExpired          = errors.New("x402: payment authorization has expired")
	// ErrInvalidRequirements means the requirements themselves are not
	// usable (an amount that is not a decimal uint256, an address that is
	// not one): a configuration error, not the payer's.
	ErrInvalidRequirements = errors.New("x402: invalid payment requirements")
)

// MismatchError is why a payment does not pay for the requirements it is
// matched against.
type MismatchError struct {
	Field  string // the payment's field, e.g. "payload.authorization.to"
	Reason string // the specification's reason code, for the 402 answer
	Err    error  // one of Matches' sentinels
	Detail string // what was expected and found
}

// Error implements error.
func (e *MismatchError) Error() string {
	return fmt.Sprintf("%v: %s: %s", e.Err, e.Field, e.Detail)
}

// Unwrap returns the sentinel.
func (e *MismatchError) Unwrap() error { return e.Err }

// ReasonFor is the reason code of a payment refused by a decoder,
// PaymentFor or Matches, for the PaymentRequired document's error: the
// *MismatchError's reason, invalid_x402_version for ErrUnsupportedVersion,
// else invalid_payload.
func ReasonFor(err error) string {
	var me *MismatchError
	if errors.As(err, &me) && me.Reason != "" {
		return me.Reason
	}
	if errors.Is(err, ErrUnsupportedVersion) {
		return ReasonInvalidVersion
	}
	return ReasonInvalidPayload
}

func mismatch(err error, reason, field, format string, args ...any) error {
	return &MismatchError{Field: field, Reason: reason, Err: err, Detail: fmt.Sprintf(format, args...)}
}

// Matches reports whether p, a payment from a decoder (Validate passed),
// pays for req at now: the same scheme and network; for version 2 the same
// asset and payTo in p.Accepted and an accepted amount not below
// req.Amount; the authorization's recipient is req.PayTo and its value is
// at least req.Amount (the exact scheme's "meets or exceeds"); and now is
// inside the authorization's window, validAfter < now < validBefore
// (EIP-3009's strict bounds, in unix seconds). Addresses compare without
// regard to case. A version 1 payment names no asset (its signature
// binds it, which the facilitator checks).
//
// It returns a *MismatchError naming the field, wrapping ErrSchemeMismatch,
// ErrNetworkMismatch, ErrAssetMismatch, ErrPayToMismatch,
// ErrAmountBelowPrice, ErrNotYetValid or ErrExpired; ErrInvalidRequirements
// if req is not usable; ErrMalformedPayment if p did not pass Validate.
//
// The facilitator checks all of this again, and the signature: Matches is
// the gateway's cheap refusal before it asks.
func Matches(req PaymentRequirements, p PaymentPayload, now time.Time) error {
	price, err := parseUint256(req.Amount, false)
	if err != nil {
		return fmt.Errorf("%w: amount: %v", ErrInvalidRequirements, err)
	}
	if !isAddress(req.PayTo) || !isAddress(req.Asset) {
		return fmt.Errorf("%w: payTo and asset must be addresses", ErrInvalidRequirements)
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Accepted.Scheme != req.Scheme {
		return mismatch(ErrSchemeMismatch, ReasonInvalidScheme, "accepted.scheme", "want %q, got %q", req.Scheme, p.Accepted.Scheme)
	}
	if p.Accepted.Network != req.Network {
		return mismatch(ErrNetworkMismatch, ReasonInvalidNetwork, "accepted.network", "want %q, got %q", req.Network, p.Accepted.Network)
	}
	if p.X402Version == Version {
		if !strings.EqualFold(p.Accepted.Asset, req.Asset) {
			return mismatch(ErrAssetMismatch, ReasonAssetMismatch, "accepted.asset", "want %s, got %s", req.Asset, p.Accepted.Asset)
		}
		if !strings.EqualFold(p.Accepted.PayTo, req.PayTo) {
			return mismatch(ErrPayToMismatch, ReasonRecipientMismatch, "accepted.payTo", "want %s, got %s", req.PayTo, p.Accepted.PayTo)
		}
		if accepted, _ := parseUint256(p.Accepted.Amount, false); accepted.Cmp(price) < 0 {
			return mismatch(ErrAmountBelowPrice, ReasonValue, "accepted.amount", "want at least %s, got %s", price, accepted)
		}
	}
	a := p.Payload.Authorization
	if !strings.EqualFold(a.To, req.PayTo) {
		return mismatch(ErrPayToMismatch, ReasonRecipientMismatch, "payload.authorization.to", "want %s, got %s", req.PayTo, a.To)
	}
	if value, _ := parseUint256(a.Value, true); value.Cmp(price) < 0 {
		return mismatch(ErrAmountBelowPrice, ReasonValue, "payload.authorization.value", "want at least %s, got %s", price, value)
	}
	unix := now.Unix()
	if after, _ := parseUint256(a.ValidAfter, true); !after.IsInt64() || after.Int64() >= unix {
		return mismatch(ErrNotYetValid, ReasonValidAfter, "payload.authorization.validAfter", "valid after %s, now %d", after, unix)
	}
	if before, _ := parseUint256(a.ValidBefore, true); before.IsInt64() && before.Int64() <= unix {
		return mismatch(ErrExpired, ReasonValidBefore, "payload.authorization.validBefore", "valid before %s, now %d", before, unix)
	}
	return nil
}

// Select returns the first of accepts that p matches at now (Matches),
// and its index. If none does, it returns Matches' error for the
// requirements of p's network and scheme if there are some (the most
// useful reason), else for the first.
func Select(accepts []PaymentRequirements, p PaymentPayload, now time.Time) (int, error) {
	if len(accepts) == 0 {
		return -1, fmt.Errorf("%w: nothing accepted", ErrInvalidRequirements)
	}
	var first, same error
	for i, req := range accepts {
		err := Matches(req, p, now)
		if err == nil {
			return i, nil
		}
		if first == nil {
			first = err
		}
		if same == nil && req.Scheme == p.Accepted.Scheme && req.Network == p.Accepted.Network {
			same = err
		}
	}
	if same != nil {
		return -1, same
	}
	return -1, first
}

// Payer returns the payer, the authorization's from address in lower case:
// the scope of the payment's idempotency keys, as a caller id scopes a
// prepaid caller's. Call it on a payment from a decoder.
func (p PaymentPayload) Payer() string { return strings.ToLower(p.Payload.Authorization.From) }

// Nonce returns the authorization's nonce in one canonical form, 0x and 64
// lower-case hex digits, whatever form the payer wrote it in (decimal, hex,
// leading zeros or not), so that one payment always binds the same nonce.
// It returns "" for a payment that did not pass Validate.
func (p PaymentPayload) Nonce() string {
	n, err := parseUint256(p.Payload.Authorization.Nonce, true)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("0x%064x", n)
}

// AuthorizationKey returns what the token contract uses to refuse a
// replay, as one string: network, asset, payer and nonce, in lower case
// ("eip155:8453/0x…asset/0x…payer/0x…nonce"). Two payments with the same
// key are the same payment; it is what a claim binds with a uniqueness
// constraint. asset is the requirements' asset (a v1 payment names none).
func (p PaymentPayload) AuthorizationKey(asset string) string {
	return strings.ToLower(p.Accepted.Network + "/" + asset + "/" + p.Payload.Authorization.From + "/" + p.Nonce())
}

// PaymentID returns the payment-identifier extension's id, or "" if the
// payment has none. It returns ErrInvalidPaymentIdentifier if the
// extension is present but its id is missing or not 16 to 128 characters
// of [A-Za-z0-9_-].
func (p PaymentPayload) PaymentID() (string, error) {
	raw, ok := p.Extensions[ExtensionPaymentIdentifier]
	if !ok {
		return "", nil
	}
	var ext struct {
		Info struct {
			ID *string `json:"id"`
		} `json:"info"`
	}
	if err := json.Unmarshal(raw, &ext); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidPaymentIdentifier, err)
	}
	if ext.Info.ID == nil {
		return "", fmt.Errorf("%w: no info.id", ErrInvalidPaymentIdentifier)
	}
	id := *ext.Info.ID
	if len(id) < 16 || len(id) > 128 {
		return "", fmt.Errorf("%w: %d characters", ErrInvalidPaymentIdentifier, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return "", fmt.Errorf("%w: character %q", ErrInvalidPaymentIdentifier, c)
		}
	}
	return id, nil
}

// PaymentIdentifierExtension returns the payment-identifier extension as
// a server advertises it in PaymentRequired.Extensions
// [ExtensionPaymentIdentifier]: an empty info and the id's JSON schema.
func PaymentIdentifierExtension() json.RawMessage { return json.RawMessage(paymentIdentifierExtension) }

const paymentIdentifierExtension = `{"info":{},"schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"id":{"type":"string","minLength":16,"maxLength":128,"pattern":"^[A-Za-z0-9_-]+$"}}}}`
