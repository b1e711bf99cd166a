//go:build !js

package stripe_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/pay/stripe"
)

func validParams() stripe.CheckoutSessionParams {
	return stripe.CheckoutSessionParams{
		Amount:     2500,
		Currency:   "USD",
		SuccessURL: "https://agent.example/topup/success?id=tu_01JF3Q8Z",
		CancelURL:  "https://agent.example/topup/cancel",
		Caller:     "agent 7",
		TopupID:    "tu_01JF3Q8Z",
	}
}

func TestCheckoutSessionForm(t *testing.T) {
	t.Parallel()
	form, err := stripe.CheckoutSessionForm(validParams())
	require.NoError(t, err)
	require.Equal(t, "adaptive_pricing%5Benabled%5D=false"+
		"&cancel_url=https%3A%2F%2Fagent.example%2Ftopup%2Fcancel"+
		"&client_reference_id=tu_01JF3Q8Z"+
		"&line_items%5B0%5D%5Bprice_data%5D%5Bcurrency%5D=usd"+
		"&line_items%5B0%5D%5Bprice_data%5D%5Bproduct_data%5D%5Bname%5D=Prepaid+balance+top-up"+
		"&line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=2500"+
		"&line_items%5B0%5D%5Bquantity%5D=1"+
		"&metadata%5Bcaller%5D=agent+7"+
		"&metadata%5Btopup_id%5D=tu_01JF3Q8Z"+
		"&mode=payment"+
		"&payment_intent_data%5Bmetadata%5D%5Bcaller%5D=agent+7"+
		"&payment_intent_data%5Bmetadata%5D%5Btopup_id%5D=tu_01JF3Q8Z"+
		"&success_url=https%3A%2F%2Fagent.example%2Ftopup%2Fsuccess%3Fid%3Dtu_01JF3Q8Z",
		form.Encode())

	p := validParams()
	p.ProductName = "Credits & more"
	form, err = stripe.CheckoutSessionForm(p)
	require.NoError(t, err)
	require.Equal(t, "Credits & more", form.Get("line_items[0][price_data][product_data][name]"))
	back, err := url.ParseQuery(form.Encode())
	require.NoError(t, err)
	require.Equal(t, form, back)
}

func TestCheckoutSessionFormRefused(t *testing.T) {
	t.Parallel()
	tests := map[string]func(*stripe.CheckoutSessionParams){
		"zero amount":          func(p *stripe.CheckoutSessionParams) { p.Amount = 0 },
		"negative amount":      func(p *stripe.CheckoutSessionParams) { p.Amount = -1 },
		"amount over 2^53-1":   func(p *stripe.CheckoutSessionParams) { p.Amount = 1 << 53 },
		"currency too long":    func(p *stripe.CheckoutSessionParams) { p.Currency = "USDC" },
		"currency not letters": func(p *stripe.CheckoutSessionParams) { p.Currency = "U$D" },
		"relative success URL": func(p *stripe.CheckoutSessionParams) { p.SuccessURL = "/done" },
		"no cancel URL":        func(p *stripe.CheckoutSessionParams) { p.CancelURL = "" },
		"javascript URL":       func(p *stripe.CheckoutSessionParams) { p.CancelURL = "javascript:alert(1)" },
		"no caller":            func(p *stripe.CheckoutSessionParams) { p.Caller = "" },
		"caller too long":      func(p *stripe.CheckoutSessionParams) { p.Caller = strings.Repeat("c", 501) },
		"no top-up id":         func(p *stripe.CheckoutSessionParams) { p.TopupID = "" },
		"top-up id too long":   func(p *stripe.CheckoutSessionParams) { p.TopupID = strings.Repeat("t", 201) },
	}
	for name, mutate := range tests {
		p := validParams()
		mutate(&p)
		form, err := stripe.CheckoutSessionForm(p)
		require.ErrorIs(t, err, stripe.ErrInvalidCheckoutParams, name)
		require.Nil(t, form, name)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	// Computed independently with: printf 'agent-7\0key-1' | sha256sum | cut -c1-32
	k := stripe.IdempotencyKey("agent-7", "key-1")
	require.Equal(t, "tg-topup-61f99047659a5cfa93859858b5a66062", k)
	require.Len(t, k, len("tg-topup-")+32)
	require.Equal(t, k, stripe.IdempotencyKey("agent-7", "key-1"), "deterministic")
	require.NotEqual(t, k, stripe.IdempotencyKey("agent-8", "key-1"), "callers don't share keys")
	require.NotEqual(t, k, stripe.IdempotencyKey("agent-7", "key-2"))
	require.NotEqual(t, stripe.IdempotencyKey("ab", "c"), stripe.IdempotencyKey("a", "bc"), "the separator keeps caller and key apart")
}
