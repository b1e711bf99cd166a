package x402

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"time"

	"github.com/toolgate/toolgate-go/handler/pay"
)

// RailName names the x402 rail in the store.
const RailName = "x402"

// CallerPrefix scopes a payer's keys, payments and credit-back balance:
// the caller of a payment is CallerPrefix + its lower-case address.
const CallerPrefix = "x402:"

// Offer is one tool's x402 price: what PAYMENT-REQUIRED asks for. Its
// fields are catalog.X402's, in the same order, so a tool's price converts
// without a copy that could drift: x402.Offer(*tool.X402). The REST and MCP
// surfaces both build their offer so; a field added to one type and not to
// the other stops both from compiling.
type Offer struct {
	Network string // CAIP-2, e.g. "eip155:8453"
	Asset   string // the token contract
	PayTo   string
	// Amount is the price in atomic units of Asset; at most 2^53-1, so the
	// ledger can credit it back exactly.
	Amount int64
	// Currency is the ledger's name for the asset's unit ("USDC": 6
	// decimals), for credit-backs.
	Currency          string
	MaxTimeoutSeconds int
	Extra             json.RawMessage
}

// Requirements is the offer as x402 states it.
func (o Offer) Requirements() PaymentRequirements {
	return PaymentRequirements{Scheme: SchemeExact, Network: o.Network, Amount: strconv.FormatInt(o.Amount, 10),
		Asset: o.Asset, PayTo: o.PayTo, MaxTimeoutSeconds: o.MaxTimeoutSeconds, Extra: o.Extra}
}

// Required is the 402 document for a resource sold at offer; reason, if
// not "", says why the payment sent (if any) was refused. The
// payment-identifier extension is advertised: a client that sends one gets
// its id as the idempotency key.
func Required(resource ResourceInfo, offer Offer, reason string) PaymentRequired {
	return PaymentRequired{X402Version: Version, Error: reason, Resource: resource,
		Accepts:    []PaymentRequirements{offer.Requirements()},
		Extensions: map[string]json.RawMessage{ExtensionPaymentIdentifier: PaymentIdentifierExtension()}}
}

// PaymentFor matches p to offer at now and returns it as the engine's
// pay.Payment: scoped by its payer, identified by its authorization, with
// the key it names (the payment-identifier id, else its nonce). Errors are
// the *MismatchError of Matches (with the reason for the 402) and
// ErrInvalidPaymentIdentifier.
func PaymentFor(p PaymentPayload, offer Offer, now time.Time) (pay.Payment, error) {
	req := offer.Requirements()
	if err := Matches(req, p, now); err != nil {
		return pay.Payment{}, err
	}
	// The exact scheme: the authorization moves exactly the price. More
	// would be settled in full and kept, while the call and any
	// credit-back count the price.
	if v, err := parseUint256(p.Payload.Authorization.Value, true); err == nil && v.Cmp(big.NewInt(offer.Amount)) != 0 {
		return pay.Payment{}, mismatch(ErrAmountBelowPrice, ReasonValue, "payload.authorization.value",
			"want exactly %d, got %s", offer.Amount, v)
	}
	hint, err := p.PaymentID()
	if err != nil {
		return pay.Payment{}, err
	}
	if hint == "" {
		hint = p.Nonce()
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return pay.Payment{}, fmt.Errorf("encode payment: %w", err)
	}
	reqJSON, err := json.Marshal(req)
	if err != nil {
		return pay.Payment{}, fmt.Errorf("encode requirements: %w", err)
	}
	var validBefore time.Time
	if v, err := parseUint256(p.Payload.Authorization.ValidBefore, true); err == nil && v.IsInt64() {
		validBefore = time.Unix(v.Int64(), 0).UTC()
	}
	return pay.Payment{Rail: RailName, Payer: p.Payer(), Caller: CallerPrefix + p.Payer(),
		Ref: p.AuthorizationKey(req.Asset), KeyHint: hint, Network: req.Network, Amount: offer.Amount,
		Currency: offer.Currency, ValidBefore: validBefore, Payload: payload, Requirements: reqJSON}, nil
}

// PaymentForExpired is PaymentFor for a payment whose authorization has
// expired (Matches answered ErrExpired): every other check applies, and the
// payment is marked Expired, so that the engine replays the key it already
// paid for (a retry after the answer) and refuses to pay anything new with
// it.
func PaymentForExpired(p PaymentPayload, offer Offer) (pay.Payment, error) {
	before, err := parseUint256(p.Payload.Authorization.ValidBefore, true)
	if err != nil || !before.IsInt64() {
		return pay.Payment{}, mismatch(ErrExpired, ReasonValidBefore, "payload.authorization.validBefore", "unreadable")
	}
	pp, err := PaymentFor(p, offer, time.Unix(before.Int64()-1, 0))
	if err != nil {
		return pay.Payment{}, err
	}
	pp.Expired = ReasonValidBefore
	return pp, nil
}

// Rail is the x402 rail behind the engine's pay.PerCall seam, over a
// facilitator.
type Rail struct {
	Facilitator *Facilitator
	// Timeout bounds each verify and settle; zero means DefaultTimeout. A
	// settle that runs out is an unknown outcome (settled again later).
	Timeout time.Duration
}

// DefaultTimeout bounds a facilitator call when Rail.Timeout is zero.
const DefaultTimeout = 15 * time.Second

func (r *Rail) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	d := r.Timeout
	if d <= 0 {
		d = DefaultTimeout
	}
	return context.WithTimeout(ctx, d)
}

var _ pay.PerCall = (*Rail)(nil)

// Rail implements pay.PerCall.
func (r *Rail) Rail() string { return RailName }

// decode reads back what PaymentFor encoded.
func decode(p pay.Payment) (PaymentPayload, PaymentRequirements, error) {
	var pp PaymentPayload
	var req PaymentRequirements
	if err := json.Unmarshal(p.Payload, &pp); err != nil {
		return pp, req, fmt.Errorf("x402: stored payment: %w", err)
	}
	if err := json.Unmarshal(p.Requirements, &req); err != nil {
		return pp, req, fmt.Errorf("x402: stored requirements: %w", err)
	}
	return pp, req, nil
}

// Verify implements pay.PerCall.
func (r *Rail) Verify(ctx context.Context, p pay.Payment) error {
	pp, req, err := decode(p)
	if err != nil {
		return &pay.RejectedError{Rail: RailName, Status: http.StatusBadRequest, Reason: err.Error(), Code: ReasonInvalidPayload}
	}
	ctx, cancel := r.bound(ctx)
	defer cancel()
	_, err = r.Facilitator.Verify(ctx, pp, req)
	var rej *RejectedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &rej):
		return &pay.RejectedError{Rail: RailName, Status: rej.Status, Reason: "the facilitator refused the payment: " + rej.Reason, Code: rej.Reason}
	}
	return err // ErrFacilitatorUnavailable wraps pay.ErrUnavailable
}

// Settle implements pay.PerCall. The facilitator's "nonce already used"
// after an earlier settle of the same payment is pay.ReasonAlreadySettled.
func (r *Rail) Settle(ctx context.Context, p pay.Payment) (pay.Settlement, error) {
	pp, req, err := decode(p)
	if err != nil {
		return pay.Settlement{}, &pay.RejectedError{Rail: RailName, Status: http.StatusBadRequest, Reason: err.Error(), Code: ReasonInvalidPayload}
	}
	ctx, cancel := r.bound(ctx)
	defer cancel()
	sr, err := r.Facilitator.Settle(ctx, pp, req)
	var rej *RejectedError
	switch {
	case err == nil:
		receipt, err := json.Marshal(sr)
		if err != nil {
			return pay.Settlement{}, fmt.Errorf("%w: encode receipt: %v", pay.ErrSettlementUnknown, err)
		}
		return pay.Settlement{Transaction: sr.Transaction, Receipt: receipt}, nil
	case errors.As(err, &rej) && rej.Reason == ReasonNonceAlreadyUsed:
		return pay.Settlement{}, &pay.RejectedError{Rail: RailName, Status: rej.Status,
			Reason: "the payment was settled before", Code: pay.ReasonAlreadySettled}
	case errors.As(err, &rej):
		return pay.Settlement{}, &pay.RejectedError{Rail: RailName, Status: rej.Status,
			Reason: "the facilitator refused to settle: " + rej.Reason, Code: rej.Reason, MaybeMoved: maybeMoved[rej.Reason]}
	}
	return pay.Settlement{}, fmt.Errorf("%w: %v", pay.ErrSettlementUnknown, err)
}

// maybeMoved lists the settle refusals that an earlier settle of the same
// payment having gone through could also explain: the authorization
// expired since, the payer's balance was spent by it, or the facilitator
// cannot tell. The others (signature, recipient, value, network, scheme,
// version, payload) fail the same way whatever happened before.
var maybeMoved = map[string]bool{
	ReasonValidBefore:       true,
	ReasonInsufficientFunds: true,
	ReasonTransactionState:  true,
	ReasonUnexpectedSettle:  true,
}

// Receipt is the PAYMENT-RESPONSE document of a payment in state, with its
// transaction ("" if none is known).
func Receipt(p pay.Payment, state, transaction string) SettleResponse {
	return SettleResponse{Success: state == "settled", Payer: p.Payer, Transaction: transaction, Network: p.Network,
		ErrorReason: map[bool]string{true: "", false: state}[state == "settled"]}
}

// atomic reads a requirements amount into int64, for offers parsed from
// configuration.
func atomic(s string) (int64, error) {
	v, err := parseUint256(s, false)
	if err != nil {
		return 0, err
	}
	if !v.IsInt64() || v.Cmp(big.NewInt(1<<53-1)) > 0 || v.Sign() <= 0 {
		return 0, fmt.Errorf("amount %s is not between 1 and 2^53-1", s)
	}
	return v.Int64(), nil
}

// ParseAmount reads an atomic amount for an Offer (a positive decimal
// string below 2^53).
func ParseAmount(s string) (int64, error) { return atomic(s) }
