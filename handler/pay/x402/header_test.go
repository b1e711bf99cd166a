package x402_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/pay/x402"
)

// The specification's example payment (x402-specification-v2.md §5.2.1),
// as JSON written from its field tables.
const specPayment = `{
  "x402Version": 2,
  "resource": {"url": "https://api.example.com/premium-data", "description": "Access to premium market data", "mimeType": "application/json"},
  "accepted": {"scheme": "exact", "network": "eip155:84532", "amount": "10000",
    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    "maxTimeoutSeconds": 60, "extra": {"name":"USDC","version":"2"}},
  "payload": {
    "signature": "0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c",
    "authorization": {"from": "0x857b06519E91e3A54538791bDbb0E22373e36b66", "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
      "value": "10000", "validAfter": "1740672089", "validBefore": "1740672154",
      "nonce": "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"}},
  "extensions": {}
}`

// The same payment in the v1 shape (x402-specification-v1.md §5.2.1).
const specPaymentV1 = `{"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
  "payload": {
    "signature": "0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c",
    "authorization": {"from": "0x857b06519E91e3A54538791bDbb0E22373e36b66", "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
      "value": "10000", "validAfter": "1740672089", "validBefore": "1740672154",
      "nonce": "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"}}}`

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func specRequirements() x402.PaymentRequirements {
	return x402.PaymentRequirements{Scheme: "exact", Network: "eip155:84532", Amount: "10000",
		Asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e", PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		MaxTimeoutSeconds: 60, Extra: json.RawMessage(`{"name":"USDC","version":"2"}`)}
}

func TestDecodeSpecExample(t *testing.T) {
	t.Parallel()
	p, err := x402.DecodePayment(b64(specPayment))
	require.NoError(t, err)
	require.Equal(t, 2, p.X402Version)
	require.Equal(t, "https://api.example.com/premium-data", p.Resource.URL)
	require.Equal(t, specRequirements(), p.Accepted)
	require.Equal(t, "0x857b06519e91e3a54538791bdbb0e22373e36b66", p.Payer())
	require.Equal(t, "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480", p.Nonce())
	require.Equal(t, "1740672154", p.Payload.Authorization.ValidBefore)

	v1, err := x402.DecodePaymentV1(b64(specPaymentV1))
	require.NoError(t, err)
	require.Equal(t, 1, v1.X402Version)
	require.Equal(t, x402.PaymentRequirements{Scheme: "exact", Network: "eip155:84532"}, v1.Accepted)
	require.Equal(t, p.Payload, v1.Payload, "the signed authorization is the same in both envelopes")
	require.Equal(t, p.AuthorizationKey(p.Accepted.Asset), v1.AuthorizationKey(p.Accepted.Asset))

	// The MCP transport carries the same documents as JSON objects.
	m, err := x402.DecodePaymentJSON([]byte(specPayment))
	require.NoError(t, err)
	require.Equal(t, p, m)
	m1, err := x402.DecodePaymentJSON([]byte(specPaymentV1))
	require.NoError(t, err)
	require.Equal(t, v1, m1)
}

func TestHeadersRoundTrip(t *testing.T) {
	t.Parallel()
	p, err := x402.DecodePayment(b64(specPayment))
	require.NoError(t, err)
	p.Extensions = map[string]json.RawMessage{x402.ExtensionPaymentIdentifier: json.RawMessage(`{"info":{"id":"pay_7d5d747be160e280504c099d984bcfe0"}}`)}
	h, err := x402.Encode(p)
	require.NoError(t, err)
	got, err := x402.DecodePayment(h)
	require.NoError(t, err)
	require.Equal(t, p, got)
	id, err := got.PaymentID()
	require.NoError(t, err)
	require.Equal(t, "pay_7d5d747be160e280504c099d984bcfe0", id)

	pr := x402.PaymentRequired{X402Version: 2, Error: "PAYMENT-SIGNATURE header is required",
		Resource:   x402.ResourceInfo{URL: "https://api.example.com/premium-data", Description: "<data> & more"},
		Accepts:    []x402.PaymentRequirements{specRequirements()},
		Extensions: map[string]json.RawMessage{x402.ExtensionPaymentIdentifier: x402.PaymentIdentifierExtension()}}
	h, err = x402.Encode(pr)
	require.NoError(t, err)
	raw, err := base64.StdEncoding.DecodeString(h)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"<data> & more"`, "no HTML escaping")
	require.Contains(t, string(raw), `"maxTimeoutSeconds":60`)
	gotPR, err := x402.DecodePaymentRequired(h)
	require.NoError(t, err)
	require.Equal(t, pr, gotPR)

	sr := x402.SettleResponse{Success: true, Transaction: "0x1234", Network: "eip155:84532", Payer: "0x857b06519E91e3A54538791bDbb0E22373e36b66"}
	h, err = x402.Encode(sr)
	require.NoError(t, err)
	gotSR, err := x402.DecodeSettleResponse(h)
	require.NoError(t, err)
	require.Equal(t, sr, gotSR)
	// A failed settlement keeps "transaction": "" on the wire (required).
	h, err = x402.Encode(x402.SettleResponse{ErrorReason: "insufficient_funds", Network: "eip155:84532"})
	require.NoError(t, err)
	raw, err = base64.StdEncoding.DecodeString(h)
	require.NoError(t, err)
	require.JSONEq(t, `{"success":false,"errorReason":"insufficient_funds","transaction":"","network":"eip155:84532"}`, string(raw))

	// Unpadded base64 is accepted too.
	got, err = x402.DecodePayment(strings.TrimRight(b64(specPayment), "="))
	require.NoError(t, err)
	require.Equal(t, "10000", got.Accepted.Amount)

	name, ok := x402.NetworkToV1("eip155:8453")
	require.True(t, ok)
	require.Equal(t, "base", name)
	_, ok = x402.NetworkToV1("eip155:1")
	require.False(t, ok)
}

func TestEncodeRefusesHugeHeader(t *testing.T) {
	t.Parallel()
	pr := x402.PaymentRequired{X402Version: 2, Error: strings.Repeat("x", x402.MaxHeaderBytes)}
	_, err := x402.Encode(pr)
	require.ErrorIs(t, err, x402.ErrHeaderTooLarge)
}

// edit returns specPayment with old replaced by new (once, which must exist).
func edit(t *testing.T, old, new string) string {
	t.Helper()
	require.Contains(t, specPayment, old)
	return strings.Replace(specPayment, old, new, 1)
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	deep := `{"x402Version":2,"extensions":{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}}`
	for name, c := range map[string]struct {
		header string
		want   error
	}{
		"empty":                   {"", x402.ErrMalformedPayment},
		"garbled base64":          {"eyJ4NDAy*&^%", x402.ErrMalformedPayment},
		"base64 of not JSON":      {b64("x402Version: 2"), x402.ErrMalformedPayment},
		"JSON array":              {b64(`[1,2]`), x402.ErrMalformedPayment},
		"trailing data":           {b64(specPayment + `{}`), x402.ErrMalformedPayment},
		"invalid UTF-8":           {b64("{\"x402Version\":2,\"error\":\"\xff\"}"), x402.ErrMalformedPayment},
		"lone surrogate":          {b64(edit(t, `"Access to premium market data"`, `"\ud800"`)), x402.ErrMalformedPayment},
		"too deep":                {b64(deep), x402.ErrMalformedPayment},
		"too large":               {strings.Repeat("A", x402.MaxHeaderBytes+4), x402.ErrHeaderTooLarge},
		"no version":              {b64(edit(t, `"x402Version": 2,`, ``)), x402.ErrMalformedPayment},
		"version 1 in v2 header":  {b64(edit(t, `"x402Version": 2`, `"x402Version": 1`)), x402.ErrUnsupportedVersion},
		"version 3":               {b64(edit(t, `"x402Version": 2`, `"x402Version": 3`)), x402.ErrUnsupportedVersion},
		"version as string":       {b64(edit(t, `"x402Version": 2`, `"x402Version": "2"`)), x402.ErrMalformedPayment},
		"scheme upto":             {b64(edit(t, `"scheme": "exact"`, `"scheme": "upto"`)), x402.ErrUnsupportedScheme},
		"solana network":          {b64(edit(t, `"eip155:84532"`, `"solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"`)), x402.ErrUnsupportedNetwork},
		"v1 network name in v2":   {b64(edit(t, `"eip155:84532"`, `"base-sepolia"`)), x402.ErrUnsupportedNetwork},
		"bad payTo":               {b64(edit(t, `"payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"`, `"payTo": "0x2096"`)), x402.ErrMalformedPayment},
		"negative amount":         {b64(edit(t, `"amount": "10000"`, `"amount": "-10000"`)), x402.ErrMalformedPayment},
		"hex amount in accepted":  {b64(edit(t, `"amount": "10000"`, `"amount": "0x2710"`)), x402.ErrMalformedPayment},
		"no signature":            {b64(edit(t, `"signature": "0x2d6a`, `"sig": "0x2d6a`)), x402.ErrMalformedPayment},
		"signature not hex":       {b64(edit(t, `"signature": "0x2d6a`, `"signature": "0xzz6a`)), x402.ErrMalformedPayment},
		"bad from":                {b64(edit(t, `"from": "0x857b06519E91e3A54538791bDbb0E22373e36b66"`, `"from": "857b06519E91e3A54538791bDbb0E22373e36b66"`)), x402.ErrMalformedPayment},
		"value as number":         {b64(edit(t, `"value": "10000"`, `"value": 10000`)), x402.ErrMalformedPayment},
		"value with sign":         {b64(edit(t, `"value": "10000"`, `"value": "+10000"`)), x402.ErrMalformedPayment},
		"nonce over 32 bytes":     {b64(edit(t, `"nonce": "0xf3`, `"nonce": "0x1f3`)), x402.ErrMalformedPayment},
		"validBefore empty":       {b64(edit(t, `"validBefore": "1740672154"`, `"validBefore": ""`)), x402.ErrMalformedPayment},
		"payment id too short":    {b64(edit(t, `"extensions": {}`, `"extensions": {"payment-identifier": {"info": {"id": "short"}}}`)), x402.ErrInvalidPaymentIdentifier},
		"payment id bad char":     {b64(edit(t, `"extensions": {}`, `"extensions": {"payment-identifier": {"info": {"id": "pay_7d5d747be160e280/04c"}}}`)), x402.ErrInvalidPaymentIdentifier},
		"payment id missing":      {b64(edit(t, `"extensions": {}`, `"extensions": {"payment-identifier": {"info": {}}}`)), x402.ErrInvalidPaymentIdentifier},
		"payment id not a string": {b64(edit(t, `"extensions": {}`, `"extensions": {"payment-identifier": {"info": {"id": 12345678901234567}}}`)), x402.ErrInvalidPaymentIdentifier},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := x402.DecodePayment(c.header)
			require.ErrorIs(t, err, c.want)
		})
	}

	_, err := x402.DecodePaymentV1(b64(strings.Replace(specPaymentV1, "base-sepolia", "base-goerli", 1)))
	require.ErrorIs(t, err, x402.ErrUnsupportedNetwork)
	_, err = x402.DecodePaymentV1(b64(specPayment))
	require.ErrorIs(t, err, x402.ErrUnsupportedVersion)
	_, err = x402.DecodePaymentRequired(b64(`{"x402Version":2,"resource":{"url":"u"},"accepts":[]}`))
	require.ErrorIs(t, err, x402.ErrMalformedPayment)
	_, err = x402.DecodePaymentRequired(b64(`{"x402Version":1,"accepts":[{}]}`))
	require.ErrorIs(t, err, x402.ErrUnsupportedVersion)
	_, err = x402.DecodeSettleResponse("%%%")
	require.ErrorIs(t, err, x402.ErrMalformedPayment)
	_, err = x402.DecodePaymentJSON([]byte(strings.Repeat(`{"a":`, 40)))
	require.ErrorIs(t, err, x402.ErrMalformedPayment)
}

func TestPaymentFromHeader(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	_, ok, err := x402.PaymentFromHeader(h)
	require.NoError(t, err)
	require.False(t, ok)

	h.Set(x402.HeaderPaymentSignature, b64(specPayment))
	p, ok, err := x402.PaymentFromHeader(h)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 2, p.X402Version)

	h.Set(x402.HeaderPaymentV1, b64(specPaymentV1))
	_, ok, err = x402.PaymentFromHeader(h)
	require.True(t, ok)
	require.ErrorIs(t, err, x402.ErrAmbiguousPayment)

	h.Del(x402.HeaderPaymentSignature)
	p, ok, err = x402.PaymentFromHeader(h)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 1, p.X402Version)

	h.Add(x402.HeaderPaymentV1, b64(specPaymentV1))
	_, _, err = x402.PaymentFromHeader(h)
	require.ErrorIs(t, err, x402.ErrMalformedPayment)
}

// FuzzDecodePayment: the decoders never panic, and whatever they accept
// passes Validate and survives a round trip.
func FuzzDecodePayment(f *testing.F) {
	f.Add(b64(specPayment))
	f.Add(b64(specPaymentV1))
	f.Add(b64(`{"x402Version":2}`))
	f.Add(b64(`{"x402Version":2,"extensions":{"payment-identifier":{"info":{"id":"pay_7d5d747be160e280"}}}}`))
	f.Add("eyJ4NDAy")
	f.Add(strings.Repeat("W", 100))
	f.Fuzz(func(t *testing.T, header string) {
		for _, decode := range []func(string) (x402.PaymentPayload, error){x402.DecodePayment, x402.DecodePaymentV1} {
			p, err := decode(header)
			if err != nil {
				continue
			}
			require.NoError(t, p.Validate())
			require.Len(t, p.Nonce(), 66)
			if p.X402Version == 1 {
				continue // a v1 payment is not re-encoded (the gateway never sends one)
			}
			enc, err := x402.Encode(p)
			if err != nil {
				require.ErrorIs(t, err, x402.ErrHeaderTooLarge)
				continue
			}
			again, err := x402.DecodePaymentJSON(mustB64(t, enc))
			require.NoError(t, err)
			require.Equal(t, p.Payload, again.Payload)
			_ = x402.Matches(specRequirements(), p, time.Unix(1740672100, 0))
		}
		_, _ = x402.DecodePaymentRequired(header)
		_, _ = x402.DecodeSettleResponse(header)
	})
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	require.NoError(t, err)
	return b
}
