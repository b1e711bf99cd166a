package store

import "fmt"

// # Metered prices: holds and captures
//
// A metered tool's price is known only after the call: the upstream reports
// the units it used. The key holds the tool's maximum while the call runs
// and keeps only what was used, as a card authorization is captured:
//
//   - authorize: the claim charges the maximum as a hold (ClaimChargeParams
//     or ChargeParams.Hold), in the same atomic step as the claim, under
//     every rule of a charge (balance, debt, spending caps: a hold counts
//     against a cap at its maximum until it is captured);
//   - capture: the Complete of a 2xx answer (CompleteParams.Capture)
//     captures what was used and gives the rest back as one "release"
//     entry, in the same atomic step as the Complete;
//   - void: a failure refunds the whole hold, as any charge (Refund, and
//     Sweep for an abandoned key).
//
// The hold belongs to the key, exactly as the charge does (invariants 1-6
// hold for it unchanged: the net of a key is its charge's amount), and:
//
//  23. per key (per incarnation), the net charged is 0 or the captured
//      amount, and the captured amount is at most the hold's maximum;
//  24. a release gives back part of an open hold only, at most once per
//      hold, and never more than the hold; a release takes its amount
//      back from the spend of its charge's cap windows, as a refund does;
//  25. a completed key holds no open hold: the Complete that stores a
//      held key's answer captures it in the same atomic step;
//  26. an abandoned hold is refunded like an abandoned charge: no hold
//      stays open past its lease plus one Sweep.
//
// Backends verify 23-25 in CheckInvariants; 26 is Sweep's contract, which
// the conformance suite drives.

// HoldState says whether a key's charge is a metered price's hold.
type HoldState string

// Hold states. A charge that is no hold is HoldNone; a hold moves held →
// captured when its answer is stored, or is refunded while held.
const (
	HoldNone     HoldState = "none"
	HoldHeld     HoldState = "held"
	HoldCaptured HoldState = "captured"
)

// ValidateCapture returns ErrInvalidAmount unless a Complete's capture, if
// any, is within [0, MaxAmount].
func ValidateCapture(capture *int64) error {
	if capture != nil && (*capture < 0 || *capture > MaxAmount) {
		return fmt.Errorf("%w: capture %d", ErrInvalidAmount, *capture)
	}
	return nil
}
