package x402

import "encoding/json"

// Version is the x402 protocol version this package speaks (x402 v2). A
// version 1 payment (the X-PAYMENT header) is decoded into the same types
// with X402Version 1 (DecodePaymentV1).
const Version = 2

// SchemeExact is the only payment scheme this package knows: "exact" on
// EVM networks, an EIP-3009 transferWithAuthorization signed by the payer.
const SchemeExact = "exact"

// The HTTP headers of the x402 transports. Every value is the standard
// base64 of a JSON document.
const (
	HeaderPaymentRequired  = "PAYMENT-REQUIRED"   // server → client: PaymentRequired (v2)
	HeaderPaymentSignature = "PAYMENT-SIGNATURE"  // client → server: PaymentPayload (v2)
	HeaderPaymentResponse  = "PAYMENT-RESPONSE"   // server → client: SettleResponse (v2)
	HeaderPaymentV1        = "X-PAYMENT"          // client → server: v1 PaymentPayload
	HeaderPaymentRespV1    = "X-PAYMENT-RESPONSE" // server → client: SettleResponse (v1)
)

// The MCP transport's _meta keys: the payment comes in a tool call's
// params._meta[MetaPayment] (a PaymentPayload as a JSON object, not
// base64, DecodePaymentJSON) and the receipt goes back in the result's
// _meta[MetaPaymentResponse] (a SettleResponse).
const (
	MetaPayment         = "x402/payment"
	MetaPaymentResponse = "x402/payment-response"
)

// ExtensionPaymentIdentifier names the payment-identifier extension: the
// client puts an idempotency id in extensions["payment-identifier"].info.id
// (16 to 128 characters of [A-Za-z0-9_-]), reused on every retry.
const ExtensionPaymentIdentifier = "payment-identifier"

// Reason codes of the x402 v2 specification (section 9) and of the exact
// EVM scheme, as facilitators answer them in VerifyResponse.InvalidReason
// and SettleResponse.ErrorReason; MismatchError.Reason uses them too.
const (
	ReasonInsufficientFunds   = "insufficient_funds"
	ReasonValidAfter          = "invalid_exact_evm_payload_authorization_valid_after"
	ReasonValidBefore         = "invalid_exact_evm_payload_authorization_valid_before"
	ReasonValue               = "invalid_exact_evm_payload_authorization_value"
	ReasonSignature           = "invalid_exact_evm_payload_signature"
	ReasonRecipientMismatch   = "invalid_exact_evm_payload_recipient_mismatch"
	ReasonInvalidNetwork      = "invalid_network"
	ReasonInvalidPayload      = "invalid_payload"
	ReasonInvalidRequirements = "invalid_payment_requirements"
	ReasonInvalidScheme       = "invalid_scheme"
	ReasonUnsupportedScheme   = "unsupported_scheme"
	ReasonInvalidVersion      = "invalid_x402_version"
	ReasonTransactionState    = "invalid_transaction_state"
	ReasonUnexpectedVerify    = "unexpected_verify_error"
	ReasonUnexpectedSettle    = "unexpected_settle_error"
	// ReasonNonceAlreadyUsed is not in the core specification; it is the
	// reference facilitator's code for an authorization whose nonce the
	// token contract has already consumed (EIP-3009 authorizationState).
	// Answered to a settle retry, it usually means an earlier settle of the
	// same payment went through and its answer was lost.
	ReasonNonceAlreadyUsed = "invalid_exact_evm_nonce_already_used"
	// ReasonSettlementPending is the reference facilitator's non-terminal
	// settle answer: the transaction was broadcast but its confirmation
	// could not be established. Facilitator.Settle reports it as
	// ErrSettlementUnknown, never as a rejection.
	ReasonSettlementPending = "settlement_pending"
	// ReasonAssetMismatch is answered for a payment whose accepted asset
	// is not the required one, which the specification has no code for.
	ReasonAssetMismatch = "invalid_exact_evm_asset_mismatch"
)

// ResourceInfo describes the paid resource.
type ResourceInfo struct {
	URL         string `json:"url"`
	Description string `json:"description,omitempty"`
	MimeType    string `json:"mimeType,omitempty"`
}

// PaymentRequirements is one way to pay that a resource server accepts.
type PaymentRequirements struct {
	Scheme  string `json:"scheme"`  // "exact"
	Network string `json:"network"` // CAIP-2, e.g. "eip155:8453"
	// Amount is the price in atomic units of Asset, a decimal string
	// (uint256: it may exceed int64).
	Amount string `json:"amount"`
	Asset  string `json:"asset"` // the token contract (EIP-3009), 0x + 40 hex
	PayTo  string `json:"payTo"` // the recipient, 0x + 40 hex
	// MaxTimeoutSeconds is how long the server may take to answer; the
	// client signs an authorization valid at least that long.
	MaxTimeoutSeconds int `json:"maxTimeoutSeconds"`
	// Extra is scheme-specific; for exact on EVM the token's EIP-712
	// domain {"name", "version"}. Nil is omitted.
	Extra json.RawMessage `json:"extra,omitempty"`
}

// PaymentRequired is the 402 answer's document (the PAYMENT-REQUIRED
// header, the MCP tool result's structuredContent).
type PaymentRequired struct {
	X402Version int                   `json:"x402Version"`
	Error       string                `json:"error,omitempty"`
	Resource    ResourceInfo          `json:"resource"`
	Accepts     []PaymentRequirements `json:"accepts"`
	// Extensions maps an extension's name to its {"info", "schema"}
	// object, kept as raw JSON.
	Extensions map[string]json.RawMessage `json:"extensions,omitempty"`
}

// Authorization is the EIP-3009 transferWithAuthorization message that
// the payer signed. Numbers are strings: decimal, or hexadecimal with a 0x
// prefix (the exact EVM scheme's encoding rules).
type Authorization struct {
	From        string `json:"from"`
	To          string `json:"to"`
	Value       string `json:"value"`
	ValidAfter  string `json:"validAfter"`  // unix seconds; valid strictly after
	ValidBefore string `json:"validBefore"` // unix seconds; valid strictly before
	Nonce       string `json:"nonce"`       // 32 bytes
}

// ExactEVMPayload is PaymentPayload.payload for the exact scheme on EVM
// (asset transfer method EIP-3009).
type ExactEVMPayload struct {
	Signature     string        `json:"signature"`
	Authorization Authorization `json:"authorization"`
}

// PaymentPayload is a signed payment: the PAYMENT-SIGNATURE header (v2),
// the X-PAYMENT header (v1, decoded into this type by DecodePaymentV1) or
// the MCP _meta["x402/payment"] object.
type PaymentPayload struct {
	// X402Version is 2, or 1 for a payment decoded from a v1 document: then
	// Accepted holds only Scheme and Network (mapped to CAIP-2), and
	// Resource is nil.
	X402Version int                        `json:"x402Version"`
	Resource    *ResourceInfo              `json:"resource,omitempty"`
	Accepted    PaymentRequirements        `json:"accepted"`
	Payload     ExactEVMPayload            `json:"payload"`
	Extensions  map[string]json.RawMessage `json:"extensions,omitempty"`
}

// VerifyRequest is the body of a facilitator's POST /verify and
// POST /settle.
type VerifyRequest struct {
	X402Version         int                 `json:"x402Version"`
	PaymentPayload      PaymentPayload      `json:"paymentPayload"`
	PaymentRequirements PaymentRequirements `json:"paymentRequirements"`
}

// SettleRequest is the body of POST /settle: the same as VerifyRequest.
type SettleRequest = VerifyRequest

// VerifyResponse is the facilitator's answer to POST /verify.
type VerifyResponse struct {
	IsValid       bool   `json:"isValid"`
	InvalidReason string `json:"invalidReason,omitempty"`
	Payer         string `json:"payer,omitempty"`
}

// SettleResponse is the facilitator's answer to POST /settle, and the
// receipt in the PAYMENT-RESPONSE header and MCP _meta.
type SettleResponse struct {
	Success     bool   `json:"success"`
	ErrorReason string `json:"errorReason,omitempty"`
	Payer       string `json:"payer,omitempty"`
	Transaction string `json:"transaction"` // "" if not settled
	Network     string `json:"network"`
}

// SupportedKind is one (version, scheme, network) a facilitator handles.
type SupportedKind struct {
	X402Version int             `json:"x402Version"`
	Scheme      string          `json:"scheme"`
	Network     string          `json:"network"`
	Extra       json.RawMessage `json:"extra,omitempty"`
}

// SupportedResponse is the facilitator's answer to GET /supported.
type SupportedResponse struct {
	Kinds      []SupportedKind     `json:"kinds"`
	Extensions []string            `json:"extensions"`
	Signers    map[string][]string `json:"signers"`
}
