package x402

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"

	"github.com/toolgate/toolgate-go/handler/safejson"
)

// MaxHeaderBytes bounds an x402 header's value (base64) in both
// directions, and a payment's JSON from MCP: a payment is about 1 KB, a
// 402 with a few accepted ways to pay about 2 KB. Larger values are refused
// before they are decoded (ErrHeaderTooLarge).
const MaxHeaderBytes = 8 << 10

// MaxDepth is the deepest nesting of arrays and objects accepted in an x402
// document (checked by safejson.Check before decoding): enough for an
// extension's JSON schema, far below what would strain the decoder.
const MaxDepth = 16

// Errors of the decoders. Each is wrapped with the reason; test with
// errors.Is.
var (
	// ErrMalformedPayment means the header or JSON is not a well-formed
	// x402 document: not base64, not JSON, too deep, a required field
	// missing or of the wrong form (an address, number or nonce).
	ErrMalformedPayment = errors.New("x402: malformed payment")
	// ErrHeaderTooLarge means a header value is over MaxHeaderBytes.
	ErrHeaderTooLarge = errors.New("x402: header too large")
	// ErrUnsupportedVersion means x402Version is not the one expected.
	ErrUnsupportedVersion = errors.New("x402: unsupported x402 version")
	// ErrUnsupportedScheme means a scheme other than "exact".
	ErrUnsupportedScheme = errors.New("x402: unsupported payment scheme")
	// ErrUnsupportedNetwork means a network that is not an EVM chain in
	// CAIP-2 form (eip155:<chain id>), or a v1 network name this package
	// does not know.
	ErrUnsupportedNetwork = errors.New("x402: unsupported network")
	// ErrInvalidPaymentIdentifier means the payment-identifier extension
	// is present but its id is not 16 to 128 characters of [A-Za-z0-9_-].
	ErrInvalidPaymentIdentifier = errors.New("x402: invalid payment identifier")
	// ErrAmbiguousPayment means a request carries both PAYMENT-SIGNATURE
	// and X-PAYMENT: two payments for one call are refused, not chosen
	// between.
	ErrAmbiguousPayment = errors.New("x402: both PAYMENT-SIGNATURE and X-PAYMENT")
)

// Encode returns the header value of v (a PaymentRequired, PaymentPayload
// or SettleResponse): the standard base64, with padding, of its JSON
// without HTML escaping. It returns ErrHeaderTooLarge if the value would
// exceed MaxHeaderBytes.
func Encode(v any) (string, error) {
	b, err := safejson.MarshalNoEscape(v)
	if err != nil {
		return "", fmt.Errorf("x402: encode: %w", err)
	}
	if base64.StdEncoding.EncodedLen(len(b)) > MaxHeaderBytes {
		return "", fmt.Errorf("%w: %d bytes of JSON", ErrHeaderTooLarge, len(b))
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// decodeHeader returns the JSON in a header value: standard base64, with
// or without padding, checked with safejson.Check (UTF-8, depth, lone
// surrogates) before any decoder sees it.
func decodeHeader(value string) ([]byte, error) {
	value = strings.TrimSpace(value)
	if len(value) > MaxHeaderBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrHeaderTooLarge, len(value))
	}
	if value == "" {
		return nil, fmt.Errorf("%w: empty header", ErrMalformedPayment)
	}
	b, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		var err2 error
		if b, err2 = base64.RawStdEncoding.DecodeString(value); err2 != nil {
			return nil, fmt.Errorf("%w: not base64: %v", ErrMalformedPayment, err)
		}
	}
	return b, checkJSON(b)
}

func checkJSON(b []byte) error {
	if len(b) > MaxHeaderBytes {
		return fmt.Errorf("%w: %d bytes", ErrHeaderTooLarge, len(b))
	}
	if reason := safejson.Check(b, MaxDepth); reason != "" {
		return fmt.Errorf("%w: %s", ErrMalformedPayment, reason)
	}
	return nil
}

// unmarshal decodes one JSON object into v (unknown fields are ignored:
// the specification lets documents grow).
func unmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedPayment, err)
	}
	return nil
}

// DecodePaymentRequired decodes a PAYMENT-REQUIRED header value. It
// returns ErrHeaderTooLarge, ErrMalformedPayment (also for an empty
// accepts) or ErrUnsupportedVersion.
func DecodePaymentRequired(value string) (PaymentRequired, error) {
	var pr PaymentRequired
	b, err := decodeHeader(value)
	if err != nil {
		return pr, err
	}
	if err := unmarshal(b, &pr); err != nil {
		return pr, err
	}
	if pr.X402Version != Version {
		return pr, fmt.Errorf("%w: %d", ErrUnsupportedVersion, pr.X402Version)
	}
	if len(pr.Accepts) == 0 {
		return pr, fmt.Errorf("%w: no accepted way to pay", ErrMalformedPayment)
	}
	return pr, nil
}

// DecodeSettleResponse decodes a PAYMENT-RESPONSE (or X-PAYMENT-RESPONSE)
// header value. It returns ErrHeaderTooLarge or ErrMalformedPayment.
func DecodeSettleResponse(value string) (SettleResponse, error) {
	var sr SettleResponse
	b, err := decodeHeader(value)
	if err != nil {
		return sr, err
	}
	return sr, unmarshal(b, &sr)
}

// DecodePayment decodes a PAYMENT-SIGNATURE header value: a v2
// PaymentPayload of the exact scheme on an EVM network, validated by
// Validate. Errors: ErrHeaderTooLarge, ErrMalformedPayment,
// ErrUnsupportedVersion (x402Version is not 2), ErrUnsupportedScheme,
// ErrUnsupportedNetwork, ErrInvalidPaymentIdentifier.
func DecodePayment(value string) (PaymentPayload, error) {
	b, err := decodeHeader(value)
	if err != nil {
		return PaymentPayload{}, err
	}
	return decodePayment(b, Version)
}

// DecodePaymentV1 decodes an X-PAYMENT header value (x402 v1:
// {x402Version: 1, scheme, network, payload}) into a PaymentPayload with
// X402Version 1, Accepted.Scheme, and Accepted.Network mapped to CAIP-2
// (NetworkFromV1). The signed authorization does not depend on the
// envelope, so the payment can be verified and settled in v2 form
// (Facilitator does, with the requirements it is matched against). Errors
// as DecodePayment; a v1 network name it does not know is
// ErrUnsupportedNetwork.
func DecodePaymentV1(value string) (PaymentPayload, error) {
	b, err := decodeHeader(value)
	if err != nil {
		return PaymentPayload{}, err
	}
	return decodePayment(b, 1)
}

// DecodePaymentJSON decodes a payment given as a JSON object, the MCP
// transport's _meta["x402/payment"]: version 2, or version 1 in the v1
// shape. Errors as DecodePayment.
func DecodePaymentJSON(b []byte) (PaymentPayload, error) {
	if err := checkJSON(b); err != nil {
		return PaymentPayload{}, err
	}
	return decodePayment(b, 0)
}

// PaymentFromHeader returns the payment in h: PAYMENT-SIGNATURE (v2) or
// X-PAYMENT (v1). ok is false if h has neither. Both at once is
// ErrAmbiguousPayment; otherwise the errors of DecodePayment.
func PaymentFromHeader(h http.Header) (p PaymentPayload, ok bool, err error) {
	v2, v1 := h.Values(HeaderPaymentSignature), h.Values(HeaderPaymentV1)
	switch {
	case len(v2) == 0 && len(v1) == 0:
		return p, false, nil
	case len(v2)+len(v1) > 1:
		if len(v2) > 0 && len(v1) > 0 {
			return p, true, ErrAmbiguousPayment
		}
		return p, true, fmt.Errorf("%w: the payment header is repeated", ErrMalformedPayment)
	case len(v2) == 1:
		p, err = DecodePayment(v2[0])
	default:
		p, err = DecodePaymentV1(v1[0])
	}
	return p, true, err
}

// decodePayment decodes b as version want (0: whichever x402Version says).
func decodePayment(b []byte, want int) (PaymentPayload, error) {
	var head struct {
		X402Version *int `json:"x402Version"`
	}
	if err := unmarshal(b, &head); err != nil {
		return PaymentPayload{}, err
	}
	if head.X402Version == nil {
		return PaymentPayload{}, fmt.Errorf("%w: no x402Version", ErrMalformedPayment)
	}
	v := *head.X402Version
	if (want != 0 && v != want) || (v != 1 && v != 2) {
		return PaymentPayload{}, fmt.Errorf("%w: %d", ErrUnsupportedVersion, v)
	}
	var p PaymentPayload
	if v == 1 {
		var v1 struct {
			Scheme  string          `json:"scheme"`
			Network string          `json:"network"`
			Payload ExactEVMPayload `json:"payload"`
		}
		if err := unmarshal(b, &v1); err != nil {
			return p, err
		}
		network, ok := NetworkFromV1(v1.Network)
		if !ok {
			return p, fmt.Errorf("%w: v1 network %q", ErrUnsupportedNetwork, v1.Network)
		}
		p = PaymentPayload{X402Version: 1, Accepted: PaymentRequirements{Scheme: v1.Scheme, Network: network},
			Payload: v1.Payload}
	} else if err := unmarshal(b, &p); err != nil {
		return p, err
	}
	return p, p.Validate()
}

// Validate checks that p is a payment this package can act on: version 1
// or 2, the exact scheme, an eip155 network, a signature (0x and hex), the
// authorization's addresses (0x and 40 hex digits), its numbers (uint256,
// decimal or 0x hex), its nonce (32 bytes), and the payment-identifier
// extension's id when present. For version 2 it also checks the accepted
// requirements' amount, asset and payTo. It returns the decoders' errors.
func (p PaymentPayload) Validate() error {
	if p.X402Version != 1 && p.X402Version != Version {
		return fmt.Errorf("%w: %d", ErrUnsupportedVersion, p.X402Version)
	}
	if p.Accepted.Scheme != SchemeExact {
		return fmt.Errorf("%w: %q", ErrUnsupportedScheme, p.Accepted.Scheme)
	}
	if !isEVMNetwork(p.Accepted.Network) {
		return fmt.Errorf("%w: %q", ErrUnsupportedNetwork, p.Accepted.Network)
	}
	if p.X402Version == Version {
		if _, err := parseUint256(p.Accepted.Amount, false); err != nil {
			return fmt.Errorf("%w: accepted.amount: %v", ErrMalformedPayment, err)
		}
		for _, f := range []field{{"accepted.asset", p.Accepted.Asset}, {"accepted.payTo", p.Accepted.PayTo}} {
			if !isAddress(f.value) {
				return fmt.Errorf("%w: %s is not an address", ErrMalformedPayment, f.name)
			}
		}
	}
	if s := p.Payload.Signature; len(s) < 4 || !hasHexPrefix(s) || !isHex(s[2:]) {
		return fmt.Errorf("%w: payload.signature is not 0x and hex", ErrMalformedPayment)
	}
	a := p.Payload.Authorization
	for _, f := range []field{{"from", a.From}, {"to", a.To}} {
		if !isAddress(f.value) {
			return fmt.Errorf("%w: authorization.%s is not an address", ErrMalformedPayment, f.name)
		}
	}
	for _, f := range []field{{"value", a.Value}, {"validAfter", a.ValidAfter}, {"validBefore", a.ValidBefore},
		{"nonce", a.Nonce}} {
		if _, err := parseUint256(f.value, true); err != nil {
			return fmt.Errorf("%w: authorization.%s: %v", ErrMalformedPayment, f.name, err)
		}
	}
	if _, err := p.PaymentID(); err != nil {
		return err
	}
	return nil
}

type field struct{ name, value string }

// v1Networks maps x402 v1 network names to CAIP-2 (the EVM networks of the
// v1 reference implementation).
var v1Networks = map[string]string{
	"base":           "eip155:8453",
	"base-sepolia":   "eip155:84532",
	"avalanche":      "eip155:43114",
	"avalanche-fuji": "eip155:43113",
	"polygon":        "eip155:137",
	"polygon-amoy":   "eip155:80002",
}

// NetworkFromV1 returns the CAIP-2 id of a v1 network name ("base" →
// "eip155:8453"); ok is false for a name it does not know.
func NetworkFromV1(name string) (caip2 string, ok bool) {
	caip2, ok = v1Networks[name]
	return caip2, ok
}

// NetworkToV1 returns the v1 name of a CAIP-2 network, for the
// X-PAYMENT-RESPONSE of a v1 payment; ok is false if v1 has no name for
// it.
func NetworkToV1(caip2 string) (name string, ok bool) {
	for n, c := range v1Networks {
		if c == caip2 {
			return n, true
		}
	}
	return "", false
}

// isEVMNetwork reports whether n is eip155:<decimal chain id>.
func isEVMNetwork(n string) bool {
	id, ok := strings.CutPrefix(n, "eip155:")
	if !ok || id == "" || len(id) > 20 || (id[0] == '0') {
		return false
	}
	for _, c := range id {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func hasHexPrefix(s string) bool { return len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') }

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// isAddress reports whether s is an EVM address: 0x (or 0X) and 40 hex
// digits, in any case (the EIP-55 checksum is not checked: that needs
// Keccak-256, and the facilitator checks the signature anyway).
func isAddress(s string) bool { return len(s) == 42 && hasHexPrefix(s) && isHex(s[2:]) }

// maxUint256 is 2^256 - 1.
var maxUint256 = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))

// parseUint256 parses an unsigned 256-bit integer: decimal digits, or, if
// hexOK, 0x and hex digits. At most 80 characters, so nothing large is
// ever parsed.
func parseUint256(s string, hexOK bool) (*big.Int, error) {
	if s == "" || len(s) > 80 {
		return nil, fmt.Errorf("%q is not a uint256", s)
	}
	digits, base := s, 10
	if hasHexPrefix(s) {
		if !hexOK {
			return nil, fmt.Errorf("%q is not a decimal number", s)
		}
		digits, base = s[2:], 16
		if digits == "" || !isHex(digits) {
			return nil, fmt.Errorf("%q is not a hex number", s)
		}
	} else {
		for i := 0; i < len(digits); i++ {
			if digits[i] < '0' || digits[i] > '9' {
				return nil, fmt.Errorf("%q is not a decimal number", s)
			}
		}
	}
	n, ok := new(big.Int).SetString(digits, base)
	if !ok || n.Cmp(maxUint256) > 0 {
		return nil, fmt.Errorf("%q is not a uint256", s)
	}
	return n, nil
}
