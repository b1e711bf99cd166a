// Package x402 is the x402 rail's wire layer (issue 13): the x402 v2 types
// written from the specification (no go-ethereum, no x402 module), the
// bounded codecs of its headers, the gateway's own check that a payment
// pays for what it asked, the idempotency material a payment carries, and
// a client of a facilitator's HTTP API. It is small on purpose: it is in
// the wasm, and imports only store, handler/safejson and handler/pay.
//
// What is here:
//   - Types: PaymentRequired, PaymentRequirements, PaymentPayload (the
//     exact scheme on EVM: an EIP-3009 authorization and its signature),
//     VerifyRequest/VerifyResponse, SettleRequest/SettleResponse,
//     SupportedResponse, and the specification's reason codes.
//   - Headers: PAYMENT-REQUIRED, PAYMENT-SIGNATURE and PAYMENT-RESPONSE
//     (base64 of JSON), and v1's X-PAYMENT (decoded into the v2 types) and
//     X-PAYMENT-RESPONSE (the same SettleResponse). Every decoder bounds
//     the size (MaxHeaderBytes) and runs safejson.Check (depth, UTF-8, lone
//     surrogates) before json sees a byte, and answers a precise sentinel
//     (ErrMalformedPayment, ErrUnsupportedVersion, ErrUnsupportedScheme,
//     ErrUnsupportedNetwork, ErrInvalidPaymentIdentifier, ...). The MCP
//     transport's _meta["x402/payment"] object decodes with
//     DecodePaymentJSON.
//   - Matches (and Select): scheme, network, asset, payTo, amount at least
//     the price, and validAfter < now < validBefore, with a *MismatchError
//     that names the field and carries the reason code for the 402.
//   - Idempotency material: Payer (the from address, lower case: the
//     scope of keys), Nonce (one canonical form), PaymentID (the
//     payment-identifier extension's id), AuthorizationKey (what the chain
//     refuses a replay by).
//   - Facilitator: Verify, Settle and Supported over an injected SendFunc.
//     Its errors separate a definitive no (*RejectedError, with the
//     facilitator's reason) from no usable answer: for verify
//     ErrFacilitatorUnavailable (nothing moved, retry), for settle
//     ErrSettlementUnknown (the money may have moved).
//
// The test facilitator, written from the specification, is in
// facilitatortest (test-only; never in the wasm).
//
// Not built yet: the engine's use of it. The plan, per
// ../shared/PAYMENTS.md's authorize / capture / void seam:
//
//   - Authorize, before the upstream runs: decode the payment, Select the
//     tool's requirements it pays, Verify with the facilitator (a
//     RejectedError is a 402 with its reason; ErrFacilitatorUnavailable a
//     503 and nothing claimed), then claim the key (Idempotency-Key, else
//     PaymentID, else Nonce, scoped by Payer) with the payment bound to it
//     by AuthorizationKey under a uniqueness constraint, so one signed
//     payment pays for one key: the same payment under another key is a
//     409 that never runs the upstream. The authorization belongs to the
//     key, as a prepaid charge does.
//   - Capture, after a success is stored: Settle. Success records the
//     transaction and its PAYMENT-RESPONSE with the answer, so a replay
//     returns both and never settles again. ErrSettlementUnknown marks the
//     key settlement_pending and queues it (a durable table keyed by payer)
//     for the cron to settle the same payload again, before validBefore;
//     it is never answered with a fresh 402, or the payer signs again and
//     pays twice. A retry answered ReasonNonceAlreadyUsed after an unknown
//     outcome most likely means the lost settle went through (the chain
//     consumed the nonce); the reconciler should record it as settled
//     without a transaction hash rather than as a failure.
//   - Void, after a failure: nothing to do, since nothing settled before
//     success; the same signed payment may be retried until it expires. If
//     it was settled and our side then failed (the answer could not be
//     stored), credit the payer back on the prepaid ledger, once, through
//     the one credit path: on-chain money is never sent back or taken twice.
package x402
