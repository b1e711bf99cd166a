package facilitatortest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/handler/pay/x402"
)

// DefaultSecret is the server secret that payer keys derive from when
// Start is given no WithSecret.
const DefaultSecret = "facilitatortest"

// The signature scheme of this test server stands in for EIP-712 over
// EIP-3009's TransferWithAuthorization, which needs secp256k1 and
// Keccak-256 (go-ethereum) to sign and recover. It keeps what the tests
// need from the real one: a signature that only the payer can make, that
// covers every field of the authorization and the token's domain (network
// and asset), so that changing any of them after signing is refused with
// invalid_exact_evm_payload_signature. It is:
//
//	key(payer)  = HMAC-SHA256(secret, lower-case payer address)
//	message     = "x402-facilitatortest-eip3009" and network, asset, from,
//	              to (lower case), value, validAfter, validBefore (decimal),
//	              nonce (0x and 64 hex digits), joined by "\n"
//	signature   = "0x" + hex(HMAC-SHA256(key(payer), message))
//
// The key is derived from the server's secret, so a test (or a local
// client of the standalone command) that knows the secret can pay as any
// address, and nobody else can. Real signature recovery, balances and
// on-chain simulation are out of scope.

// PayerKey returns the signing key of the payer at address for a server
// with secret.
func PayerKey(secret, address string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strings.ToLower(address)))
	return m.Sum(nil)
}

// signature returns the test signature of a on network and asset with
// key, or an error if a number in a is not a uint256.
func signature(key []byte, network, asset string, a authorization) (string, error) {
	parts := []string{"x402-facilitatortest-eip3009", network, strings.ToLower(asset),
		strings.ToLower(a.From), strings.ToLower(a.To)}
	for _, n := range []string{a.Value, a.ValidAfter, a.ValidBefore} {
		v, err := parseUint(n)
		if err != nil {
			return "", err
		}
		parts = append(parts, v.String())
	}
	nonce, err := parseUint(a.Nonce)
	if err != nil {
		return "", err
	}
	parts = append(parts, fmt.Sprintf("0x%064x", nonce))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strings.Join(parts, "\n")))
	return "0x" + hex.EncodeToString(m.Sum(nil)), nil
}

// Payer pays with the test signature scheme.
type Payer struct {
	Address string // 0x and 40 hex digits
	key     []byte
}

// NewPayer returns the payer named seed (a stable address derived from it)
// for a server with secret.
func NewPayer(secret, seed string) Payer {
	sum := sha256.Sum256([]byte("facilitatortest payer/" + seed))
	addr := "0x" + hex.EncodeToString(sum[:20])
	return Payer{Address: addr, key: PayerKey(secret, addr)}
}

// Sign returns the payer's signature of a on network and asset. It panics
// if a number in a is not a uint256 (a test's mistake).
func (p Payer) Sign(network, asset string, a x402.Authorization) string {
	sig, err := signature(p.key, network, asset, authorization(a))
	if err != nil {
		panic("facilitatortest: Sign: " + err.Error())
	}
	return sig
}

// Pay returns a v2 payment of req signed by p at now: accepted is req, the
// authorization pays req.Amount to req.PayTo, is valid from a minute
// before now until now + req.MaxTimeoutSeconds (60 s if zero), and has a
// fresh random nonce.
func (p Payer) Pay(req x402.PaymentRequirements, now time.Time) x402.PaymentPayload {
	var nonce [32]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic(err)
	}
	timeout := int64(req.MaxTimeoutSeconds)
	if timeout <= 0 {
		timeout = 60
	}
	a := x402.Authorization{From: p.Address, To: req.PayTo, Value: req.Amount,
		ValidAfter:  strconv.FormatInt(now.Unix()-60, 10),
		ValidBefore: strconv.FormatInt(now.Unix()+timeout, 10),
		Nonce:       "0x" + hex.EncodeToString(nonce[:])}
	return x402.PaymentPayload{X402Version: x402.Version, Accepted: req,
		Payload: x402.ExactEVMPayload{Signature: p.Sign(req.Network, req.Asset, a), Authorization: a}}
}

// Resign signs p's authorization again, after a test changed it, so that
// the payment is validly signed (and refused for what was changed, not for
// its signature).
func (p Payer) Resign(pp x402.PaymentPayload) x402.PaymentPayload {
	pp.Payload.Signature = p.Sign(pp.Accepted.Network, pp.Accepted.Asset, pp.Payload.Authorization)
	return pp
}

// parseUint parses a uint256: decimal, or 0x and hex.
func parseUint(s string) (*big.Int, error) {
	digits, base := s, 10
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		digits, base = s[2:], 16
	}
	if digits == "" || len(digits) > 78 || strings.ContainsAny(digits, "+-_ ") {
		return nil, fmt.Errorf("%q is not a uint256", s)
	}
	n, ok := new(big.Int).SetString(digits, base)
	if !ok || n.BitLen() > 256 {
		return nil, fmt.Errorf("%q is not a uint256", s)
	}
	return n, nil
}
