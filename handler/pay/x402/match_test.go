package x402_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/pay/x402"
)

func TestMatches(t *testing.T) {
	t.Parallel()
	inWindow := time.Unix(1740672100, 0) // the spec example is valid in (1740672089, 1740672154)
	spec := func(t *testing.T) x402.PaymentPayload {
		t.Helper()
		p, err := x402.DecodePayment(b64(specPayment))
		require.NoError(t, err)
		return p
	}
	for name, c := range map[string]struct {
		change func(*x402.PaymentRequirements, *x402.PaymentPayload)
		now    time.Time
		want   error
		field  string
		reason string
	}{
		"matches": {},
		"payTo in another case": {change: func(r *x402.PaymentRequirements, _ *x402.PaymentPayload) {
			r.PayTo = "0x209693BC6AFC0C5328BA36FAF03C514EF312287C"
		}},
		"value above the price": {change: func(r *x402.PaymentRequirements, _ *x402.PaymentPayload) { r.Amount = "9999" }},
		"hex value": {change: func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Payload.Authorization.Value = "0x2710"
		}},
		"wrong scheme": {change: func(r *x402.PaymentRequirements, _ *x402.PaymentPayload) { r.Scheme = "upto" },
			want: x402.ErrSchemeMismatch, field: "accepted.scheme", reason: x402.ReasonInvalidScheme},
		"wrong network": {change: func(r *x402.PaymentRequirements, _ *x402.PaymentPayload) { r.Network = "eip155:8453" },
			want: x402.ErrNetworkMismatch, field: "accepted.network", reason: x402.ReasonInvalidNetwork},
		"wrong asset": {change: func(r *x402.PaymentRequirements, _ *x402.PaymentPayload) {
			r.Asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
		}, want: x402.ErrAssetMismatch, field: "accepted.asset", reason: x402.ReasonAssetMismatch},
		"wrong payTo": {change: func(r *x402.PaymentRequirements, _ *x402.PaymentPayload) {
			r.PayTo = "0x0000000000000000000000000000000000000001"
		}, want: x402.ErrPayToMismatch, field: "accepted.payTo", reason: x402.ReasonRecipientMismatch},
		"authorization pays someone else": {change: func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Payload.Authorization.To = "0x0000000000000000000000000000000000000001"
		}, want: x402.ErrPayToMismatch, field: "payload.authorization.to", reason: x402.ReasonRecipientMismatch},
		"accepted a lower price": {change: func(r *x402.PaymentRequirements, _ *x402.PaymentPayload) { r.Amount = "10001" },
			want: x402.ErrAmountBelowPrice, field: "accepted.amount", reason: x402.ReasonValue},
		"authorization below the price": {change: func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Payload.Authorization.Value = "9999"
		}, want: x402.ErrAmountBelowPrice, field: "payload.authorization.value", reason: x402.ReasonValue},
		"not yet valid (validAfter == now)": {now: time.Unix(1740672089, 0),
			want: x402.ErrNotYetValid, field: "payload.authorization.validAfter", reason: x402.ReasonValidAfter},
		"expired (validBefore == now)": {now: time.Unix(1740672154, 0),
			want: x402.ErrExpired, field: "payload.authorization.validBefore", reason: x402.ReasonValidBefore},
		"expired long ago": {now: time.Unix(1800000000, 0),
			want: x402.ErrExpired, field: "payload.authorization.validBefore", reason: x402.ReasonValidBefore},
		"validAfter beyond int64": {change: func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Payload.Authorization.ValidAfter = "0xffffffffffffffffffffffff"
		}, want: x402.ErrNotYetValid, field: "payload.authorization.validAfter", reason: x402.ReasonValidAfter},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			req, p := specRequirements(), spec(t)
			if c.change != nil {
				c.change(&req, &p)
			}
			now := c.now
			if now.IsZero() {
				now = inWindow
			}
			err := x402.Matches(req, p, now)
			if c.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, c.want)
			var m *x402.MismatchError
			require.True(t, errors.As(err, &m))
			require.Equal(t, c.field, m.Field)
			require.Equal(t, c.reason, m.Reason)
			require.Contains(t, err.Error(), c.field)
		})
	}

	// Requirements that are not usable are the server's error, not the payer's.
	req := specRequirements()
	req.Amount = "10 USDC"
	require.ErrorIs(t, x402.Matches(req, spec(t), inWindow), x402.ErrInvalidRequirements)
	// A payment that skipped the decoder is checked all the same.
	p := spec(t)
	p.Payload.Authorization.Nonce = "nonce"
	require.ErrorIs(t, x402.Matches(specRequirements(), p, inWindow), x402.ErrMalformedPayment)
}

func TestMatchesV1(t *testing.T) {
	t.Parallel()
	p, err := x402.DecodePaymentV1(b64(specPaymentV1))
	require.NoError(t, err)
	now := time.Unix(1740672100, 0)
	require.NoError(t, x402.Matches(specRequirements(), p, now), "v1 names no asset: the authorization is checked")
	req := specRequirements()
	req.Network = "eip155:8453"
	require.ErrorIs(t, x402.Matches(req, p, now), x402.ErrNetworkMismatch)
	req = specRequirements()
	req.Amount = "20000"
	require.ErrorIs(t, x402.Matches(req, p, now), x402.ErrAmountBelowPrice)
}

func TestSelect(t *testing.T) {
	t.Parallel()
	p, err := x402.DecodePayment(b64(specPayment))
	require.NoError(t, err)
	now := time.Unix(1740672100, 0)
	mainnet := specRequirements()
	mainnet.Network = "eip155:8453"
	dear := specRequirements()
	dear.Amount = "50000"

	i, err := x402.Select([]x402.PaymentRequirements{mainnet, specRequirements()}, p, now)
	require.NoError(t, err)
	require.Equal(t, 1, i)
	_, err = x402.Select([]x402.PaymentRequirements{mainnet, dear}, p, now)
	require.ErrorIs(t, err, x402.ErrAmountBelowPrice, "the reason of the offer on the payment's own network")
	_, err = x402.Select(nil, p, now)
	require.ErrorIs(t, err, x402.ErrInvalidRequirements)
}

func TestIdempotencyMaterial(t *testing.T) {
	t.Parallel()
	p, err := x402.DecodePayment(b64(specPayment))
	require.NoError(t, err)
	require.Equal(t, "0x857b06519e91e3a54538791bdbb0e22373e36b66", p.Payer())
	id, err := p.PaymentID()
	require.NoError(t, err)
	require.Empty(t, id, "no extension, no id")

	// One nonce, however it is written, binds as one.
	q := p
	q.Payload.Authorization.Nonce = "0xF3746613C2D920B5FDABC0856F2AEB2D4F88EE6037B8CC5D04A71A4462F13480"
	require.Equal(t, p.Nonce(), q.Nonce())
	small := p
	small.Payload.Authorization.Nonce = "255"
	require.Equal(t, "0x00000000000000000000000000000000000000000000000000000000000000ff", small.Nonce())
	small.Payload.Authorization.Nonce = "0x00ff"
	require.Equal(t, "0x00000000000000000000000000000000000000000000000000000000000000ff", small.Nonce())

	require.Equal(t, "eip155:84532/0x036cbd53842c5426634e7929541ec2318f3dcf7e/0x857b06519e91e3a54538791bdbb0e22373e36b66/"+
		"0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480", p.AuthorizationKey(p.Accepted.Asset))
	other := p
	other.Payload.Authorization.From = "0x0000000000000000000000000000000000000002"
	require.NotEqual(t, p.AuthorizationKey(p.Accepted.Asset), other.AuthorizationKey(p.Accepted.Asset))

	bad := p
	bad.Payload.Authorization.Nonce = "zz"
	require.Empty(t, bad.Nonce())
}
