package x402_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/pay"
	"github.com/toolgate/toolgate-go/handler/pay/x402"
	"github.com/toolgate/toolgate-go/handler/pay/x402/facilitatortest"
)

var t0 = time.Unix(1_800_000_000, 0)

func requirements() x402.PaymentRequirements {
	return x402.PaymentRequirements{Scheme: "exact", Network: "eip155:84532", Amount: "10000",
		Asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e", PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		MaxTimeoutSeconds: 60}
}

// setup starts a test facilitator on a fixed clock and a client of it.
func setup(t *testing.T) (*facilitatortest.Server, *x402.Facilitator, facilitatortest.Payer) {
	t.Helper()
	srv, err := facilitatortest.Start(facilitatortest.WithClock(func() time.Time { return t0 }))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	client := &x402.Facilitator{URL: srv.URL() + "/", SendFunc: http.DefaultClient.Do, Authorization: "Bearer test-secret"}
	return srv, client, srv.Payer("alice")
}

func requireRejected(t *testing.T, err error, reason string) {
	t.Helper()
	require.ErrorIs(t, err, x402.ErrPaymentRejected)
	var rej *x402.RejectedError
	require.True(t, errors.As(err, &rej))
	require.Equal(t, reason, rej.Reason)
	require.NotErrorIs(t, err, x402.ErrSettlementUnknown)
	require.NotErrorIs(t, err, pay.ErrUnavailable)
}

func requireUnknown(t *testing.T, err error) {
	t.Helper()
	require.ErrorIs(t, err, x402.ErrSettlementUnknown)
	require.NotErrorIs(t, err, x402.ErrPaymentRejected)
	require.NotErrorIs(t, err, pay.ErrUnavailable, "an unknown settle must never read as 'nothing moved'")
}

func TestVerifyAndSettle(t *testing.T) {
	t.Parallel()
	srv, client, alice := setup(t)
	ctx := t.Context()
	req := requirements()
	p := alice.Pay(req, t0)
	require.NoError(t, x402.Matches(req, p, t0))

	vr, err := client.Verify(ctx, p, req)
	require.NoError(t, err)
	require.True(t, vr.IsValid)
	require.Equal(t, alice.Address, vr.Payer)
	require.Equal(t, "Bearer test-secret", srv.LastAuthorization())

	sr, err := client.Settle(ctx, p, req)
	require.NoError(t, err)
	require.True(t, sr.Success)
	require.Regexp(t, `^0x[0-9a-f]{64}$`, sr.Transaction)
	require.Equal(t, "eip155:84532", sr.Network)
	h, err := x402.Encode(sr)
	require.NoError(t, err)
	back, err := x402.DecodeSettleResponse(h)
	require.NoError(t, err)
	require.Equal(t, sr, back)

	// The chain consumed the nonce: a second settle fails, and so does a verify.
	_, err = client.Settle(ctx, p, req)
	requireRejected(t, err, x402.ReasonNonceAlreadyUsed)
	_, err = client.Verify(ctx, p, req)
	requireRejected(t, err, x402.ReasonNonceAlreadyUsed)
	require.Equal(t, facilitatortest.Calls{Verify: 2, Settle: 2, Settled: 1}, srv.Calls(p.Nonce()))
	require.Equal(t, 1, srv.Settlements())

	// The header a client sends decodes into the same payment, and settles.
	q := alice.Pay(req, t0)
	hdr, err := x402.Encode(q)
	require.NoError(t, err)
	decoded, err := x402.DecodePayment(hdr)
	require.NoError(t, err)
	_, err = client.Settle(ctx, decoded, req)
	require.NoError(t, err)
	require.Equal(t, 2, srv.Settlements())

	kinds, err := client.Supported(ctx)
	require.NoError(t, err)
	require.Len(t, kinds.Kinds, 2)
	require.Equal(t, x402.SupportedKind{X402Version: 2, Scheme: "exact", Network: "eip155:84532"}, kinds.Kinds[0])
}

// TestFacilitatorRefuses: what the facilitator checks, with its reasons;
// nothing refused ever settles.
func TestFacilitatorRefuses(t *testing.T) {
	t.Parallel()
	srv, client, alice := setup(t)
	ctx := t.Context()
	for name, c := range map[string]struct {
		change func(*x402.PaymentRequirements, *x402.PaymentPayload)
		reason string
	}{
		"tampered value": {func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) { p.Payload.Authorization.Value = "20000" }, x402.ReasonSignature},
		"another payer's signature": {func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Payload.Signature = srv.Payer("mallory").Sign(p.Accepted.Network, p.Accepted.Asset, p.Payload.Authorization)
		}, x402.ReasonSignature},
		"signed for another asset": {func(r *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Payload.Signature = alice.Sign(p.Accepted.Network, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", p.Payload.Authorization)
		}, x402.ReasonSignature},
		"signed below the price": {func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Payload.Authorization.Value = "9999"
			*p = alice.Resign(*p)
		}, x402.ReasonValue},
		"expired": {func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Payload.Authorization.ValidBefore = "1800000000"
			*p = alice.Resign(*p)
		}, x402.ReasonValidBefore},
		"not yet valid": {func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Payload.Authorization.ValidAfter = "1800000000"
			*p = alice.Resign(*p)
		}, x402.ReasonValidAfter},
		"pays someone else": {func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Payload.Authorization.To = "0x0000000000000000000000000000000000000001"
			*p = alice.Resign(*p)
		}, x402.ReasonRecipientMismatch},
		"unsupported network": {func(r *x402.PaymentRequirements, p *x402.PaymentPayload) {
			r.Network, p.Accepted.Network = "eip155:1", "eip155:1"
			*p = alice.Resign(*p)
		}, x402.ReasonInvalidNetwork},
		"accepted another asset": {func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) {
			p.Accepted.Asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
		}, x402.ReasonAssetMismatch},
		"version 3": {func(_ *x402.PaymentRequirements, p *x402.PaymentPayload) { p.X402Version = 3 }, x402.ReasonInvalidVersion},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			req := requirements()
			p := alice.Pay(req, t0)
			c.change(&req, &p)
			_, err := client.Verify(ctx, p, req)
			requireRejected(t, err, c.reason)
			_, err = client.Settle(ctx, p, req)
			requireRejected(t, err, c.reason)
			require.Equal(t, 0, srv.Calls(p.Nonce()).Settled)
		})
	}
}

// TestV1PaymentSettlesAsV2: an X-PAYMENT payment is verified and settled
// in v2 form with the requirements it was matched against.
func TestV1PaymentSettlesAsV2(t *testing.T) {
	t.Parallel()
	srv, client, alice := setup(t)
	req := requirements()
	p := alice.Pay(req, t0)
	v1 := `{"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":{"signature":"` + p.Payload.Signature +
		`","authorization":{"from":"` + p.Payload.Authorization.From + `","to":"` + p.Payload.Authorization.To +
		`","value":"10000","validAfter":"` + p.Payload.Authorization.ValidAfter + `","validBefore":"` +
		p.Payload.Authorization.ValidBefore + `","nonce":"` + p.Payload.Authorization.Nonce + `"}}}`
	h := http.Header{}
	h.Set(x402.HeaderPaymentV1, b64(v1))
	got, ok, err := x402.PaymentFromHeader(h)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, x402.Matches(req, got, t0))
	_, err = client.Verify(t.Context(), got, req)
	require.NoError(t, err)
	_, err = client.Settle(t.Context(), got, req)
	require.NoError(t, err)
	require.Equal(t, 1, srv.Calls(p.Nonce()).Settled)
}

// TestFaults: each way a facilitator misbehaves, and what the client makes
// of it.
func TestFaults(t *testing.T) {
	t.Parallel()
	req := requirements()

	t.Run("verify rejected", func(t *testing.T) {
		t.Parallel()
		srv, client, alice := setup(t)
		srv.Inject("/verify", 1, facilitatortest.Fault{Kind: facilitatortest.Reject, Reason: x402.ReasonInsufficientFunds})
		p := alice.Pay(req, t0)
		_, err := client.Verify(t.Context(), p, req)
		requireRejected(t, err, x402.ReasonInsufficientFunds)
		_, err = client.Verify(t.Context(), p, req)
		require.NoError(t, err, "the fault was for one answer")
	})

	t.Run("verify 5xx", func(t *testing.T) {
		t.Parallel()
		srv, client, alice := setup(t)
		srv.Inject("/verify", 1, facilitatortest.Fault{Kind: facilitatortest.Status, Status: 502})
		_, err := client.Verify(t.Context(), alice.Pay(req, t0), req)
		require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
		require.ErrorIs(t, err, pay.ErrUnavailable)
	})

	t.Run("verify hangs", func(t *testing.T) {
		t.Parallel()
		srv, client, alice := setup(t)
		srv.Inject("/verify", 0, facilitatortest.Fault{Kind: facilitatortest.Hang})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := client.Verify(ctx, alice.Pay(req, t0), req)
		require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
	})

	t.Run("settle rejected", func(t *testing.T) {
		t.Parallel()
		srv, client, alice := setup(t)
		srv.Inject("/settle", 1, facilitatortest.Fault{Kind: facilitatortest.Reject, Reason: x402.ReasonTransactionState})
		p := alice.Pay(req, t0)
		_, err := client.Settle(t.Context(), p, req)
		requireRejected(t, err, x402.ReasonTransactionState)
		require.Equal(t, facilitatortest.Calls{Settle: 1}, srv.Calls(p.Nonce()))
	})

	t.Run("settle 5xx twice, then settles once", func(t *testing.T) {
		t.Parallel()
		srv, client, alice := setup(t)
		srv.Inject("/settle", 2, facilitatortest.Fault{Kind: facilitatortest.Status, Status: 503})
		p := alice.Pay(req, t0)
		for range 2 {
			_, err := client.Settle(t.Context(), p, req)
			requireUnknown(t, err)
		}
		sr, err := client.Settle(t.Context(), p, req)
		require.NoError(t, err)
		require.True(t, sr.Success)
		require.Equal(t, facilitatortest.Calls{Settle: 3, Settled: 1}, srv.Calls(p.Nonce()))
	})

	t.Run("settle hangs", func(t *testing.T) {
		t.Parallel()
		srv, client, alice := setup(t)
		srv.Inject("/settle", 1, facilitatortest.Fault{Kind: facilitatortest.Hang})
		p := alice.Pay(req, t0)
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := client.Settle(ctx, p, req)
		requireUnknown(t, err)
		require.Equal(t, facilitatortest.Calls{Settle: 1}, srv.Calls(p.Nonce()), "the hung settle moved nothing")
		_, err = client.Settle(t.Context(), p, req)
		require.NoError(t, err, "so the retry settles")
	})

	t.Run("settle succeeds but the answer is lost", func(t *testing.T) {
		t.Parallel()
		srv, client, alice := setup(t)
		srv.Inject("/settle", 1, facilitatortest.Fault{Kind: facilitatortest.Drop})
		p := alice.Pay(req, t0)
		_, err := client.Settle(t.Context(), p, req)
		requireUnknown(t, err)
		require.Equal(t, facilitatortest.Calls{Settle: 1, Settled: 1}, srv.Calls(p.Nonce()), "the money moved")
		// The retry learns that the nonce is spent: never a second payment.
		_, err = client.Settle(t.Context(), p, req)
		requireRejected(t, err, x402.ReasonNonceAlreadyUsed)
		require.Equal(t, 1, srv.Settlements())
	})

	t.Run("supported 5xx", func(t *testing.T) {
		t.Parallel()
		srv, client, _ := setup(t)
		srv.Inject("/supported", 1, facilitatortest.Fault{Kind: facilitatortest.Status})
		_, err := client.Supported(t.Context())
		require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
	})

	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		srv, client, alice := setup(t)
		require.NoError(t, srv.Close())
		_, err := client.Verify(t.Context(), alice.Pay(req, t0), req)
		require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
		_, err = client.Settle(t.Context(), alice.Pay(req, t0), req)
		requireUnknown(t, err)
	})
}

// TestUnusableAnswers: answers that are not the facilitator's documents
// are never read as a rejection.
func TestUnusableAnswers(t *testing.T) {
	t.Parallel()
	p := facilitatortest.NewPayer(facilitatortest.DefaultSecret, "bob").Pay(requirements(), t0)
	for name, answer := range map[string]struct {
		status int
		body   string
	}{
		"HTML":               {200, "<html>oops</html>"},
		"empty object":       {200, "{}"},
		"401 text":           {401, "unauthorized"},
		"too deep":           {200, `{"success":false,"x":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}`},
		"success but 500":    {500, `{"success":true,"isValid":true,"transaction":"0x1","network":"eip155:84532"}`},
		"success but 202":    {202, `{"success":true,"isValid":true,"transaction":"0x1","network":"eip155:84532"}`},
		"settlement pending": {200, `{"success":false,"errorReason":"settlement_pending","transaction":"0xabc","network":"eip155:84532"}`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(answer.status)
				_, _ = w.Write([]byte(answer.body))
			}))
			defer srv.Close()
			client := &x402.Facilitator{URL: srv.URL, SendFunc: srv.Client().Do}
			_, err := client.Settle(t.Context(), p, requirements())
			requireUnknown(t, err)
			if name != "settlement pending" {
				_, err = client.Verify(t.Context(), p, requirements())
				require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
			}
		})
	}
}

// TestConcurrentSettles: many settles of one payment at once, exactly one
// success; the others learn the nonce is spent.
func TestConcurrentSettles(t *testing.T) {
	t.Parallel()
	srv, client, alice := setup(t)
	req := requirements()
	p := alice.Pay(req, t0)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = client.Settle(t.Context(), p, req)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		requireRejected(t, err, x402.ReasonNonceAlreadyUsed)
	}
	require.Equal(t, 1, ok)
	require.Equal(t, facilitatortest.Calls{Settle: n, Settled: 1}, srv.Calls(p.Nonce()))
	require.Equal(t, 1, srv.Settlements())
}
