// Package store is the contract of toolgate's durable state: idempotency
// records with leases and fencing, and the prepaid ledger.
//
// It holds the types, the interfaces, the sentinel errors and the small
// DbClient seam. Backends live in subpackages (memory, sqlstore) and are all
// checked by the conformance suite in storetest. This package imports nothing
// else from the project.
//
// # The claim state machine
//
// A record is stored under an opaque, already scoped key. Claim decides
// atomically, in one statement:
//
//   - no record, or a record whose TTL has expired: a fresh claim (the old
//     record and its response are forgotten). A record that never completed
//     and still holds a charge is not fresh: the same request takes it over
//     with its charge (Sweep refunds and fails such a record once its lease
//     has expired);
//   - a stored fingerprint that differs: ErrFingerprintMismatch, untouched;
//   - completed within TTL: OutcomeCompleted, for replay;
//   - in_progress, same owner: OutcomeClaimed with the same generation
//     (a claim whose reply was lost is safe to retry);
//   - failed, or in_progress with an expired lease: a takeover, generation+1;
//   - in_progress with a live lease: OutcomeInProgress.
//
// # Fencing
//
// Every claim and takeover increases the record's generation. Heartbeat,
// Complete, Fail, Charge and Refund name (owner, generation) and change
// nothing, returning ErrFencedOut, unless that pair still holds the record.
// So an owner whose lease was taken over can never complete, fail, charge or
// refund.
//
// # The charge invariant
//
// The charge belongs to the idempotency key, not to the attempt:
//
//  1. per key (per incarnation, which a TTL expiry renews), the net amount
//     charged is 0 or one price, never more, through any sequence of claim,
//     charge, crash, lease expiry, takeover, retry, refund and retry. A
//     takeover inherits the charge state, so the new owner's Charge is a
//     no-op when the abandoned owner had already charged;
//  2. a completed key whose charge state is charged carries exactly one net
//     charge; one whose state is none or refunded carries none;
//  3. a refund happens at most once per charge, however often Refund is
//     called;
//  4. a balance is never negative (a CHECK constraint in SQL);
//  5. an insufficient balance returns an *InsufficientFundsError and changes
//     nothing;
//  6. every ledger mutation is an entry row, and for every (caller, currency)
//     the sum of entries equals the balance.
//
// Backends verify 1–6 in CheckInvariants, which tests call after every
// scenario.
//
// # Claim and charge in one step
//
// ClaimCharge is Claim followed, only when the claim is won, by Charge on
// the fence it won. It moves no money unless the caller now holds the record
// in progress, so it keeps 1–6 by the same rules as the two calls, and on
// engines that run statements as one atomic batch (D1, SQLite) it costs one
// round trip instead of two.
package store

import (
	"context"
	"fmt"
	"time"
)

// Status is the state of an idempotency record.
type Status string

// Record statuses.
const (
	StatusInProgress Status = "in_progress"
	StatusCompleted  Status = "completed"
	StatusFailed     Status = "failed"
)

// ChargeState says whether the current incarnation of a key holds a charge.
type ChargeState string

// Charge states. A key moves none → charged → refunded → charged → ...; it is
// never charged twice without a refund in between.
const (
	ChargeNone     ChargeState = "none"
	ChargeCharged  ChargeState = "charged"
	ChargeRefunded ChargeState = "refunded"
)

// Response is what a completed execution stored for replay.
type Response struct {
	StatusCode  int
	ContentType string
	Body        []byte
}

// Charge describes the money attached to a record's current incarnation.
type Charge struct {
	State    ChargeState
	Caller   string
	Currency string
	Amount   int64 // minor units; 0 when never charged; what was captured, for a captured hold
	Count    int64 // charges taken over the record's life (refunds do not decrease it)
	// Hold says whether the charge is a metered price's hold, and Max is
	// the maximum it held (see Holds).
	Hold HoldState
	Max  int64
}

// Record is an idempotency record.
type Record struct {
	Key            string
	Status         Status
	Owner          string
	Generation     int64
	LeaseExpiresAt time.Time
	ExpiresAt      time.Time
	Fingerprint    string
	Response       *Response // set when Status is completed
	// PaymentRef names the per-call payment bound to the current
	// incarnation (see Payments), "" for a prepaid or free call.
	PaymentRef string
	Error      string // set when Status is failed
	Charge     Charge
	// Quota says whether the current incarnation holds a unit of free
	// quota (see Quota).
	Quota     QuotaState
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Outcome is what Claim decided.
type Outcome int

// Claim outcomes.
const (
	// OutcomeClaimed means the caller now holds the record at the returned
	// generation and must execute, then Complete or Fail it.
	OutcomeClaimed Outcome = iota + 1
	// OutcomeCompleted means the record holds a stored response to replay.
	OutcomeCompleted
	// OutcomeInProgress means another owner holds a live lease.
	OutcomeInProgress
)

// String returns the outcome's name.
func (o Outcome) String() string {
	switch o {
	case OutcomeClaimed:
		return "claimed"
	case OutcomeCompleted:
		return "completed"
	case OutcomeInProgress:
		return "in_progress"
	}
	return "unknown"
}

// ClaimParams are the arguments of Claim.
type ClaimParams struct {
	Key         string
	Owner       string // unique per attempt; a retried Claim reuses it
	Fingerprint string
	Now         time.Time
	Lease       time.Duration // must be > 0
	TTL         time.Duration // zero means DefaultTTL
	// Tool and CallerID name whom the key belongs to, for the usage
	// counters and the admin's list of calls (see Stats); "" when unknown.
	// A key is scoped to one (caller, tool), so they never change for it.
	Tool, CallerID string
}

// ClaimResult is the decision of Claim and the record as it stands after it.
type ClaimResult struct {
	Outcome Outcome
	Record  Record
}

// Fence names the holder of a record: the owner and the generation it claimed.
type Fence struct {
	Key        string
	Owner      string
	Generation int64
}

// CompleteParams are the arguments of Complete.
type CompleteParams struct {
	Fence
	Response Response
	Now      time.Time
	// TTL, if set, keeps the answer for replay at least this long after
	// completion, even when the call outlived the TTL given at claim.
	TTL time.Duration
	// Usage, if set, is the call's counters (see Stats): added in the same
	// atomic step as the Complete, and only if it wins the fence.
	Usage *Usage
	// Capture, if set, is what a metered call used, in minor units: when
	// the key holds an open hold, the Complete captures min(*Capture, the
	// hold) and releases the rest, in the same atomic step (see Holds).
	// A Complete of a held key without Capture captures the whole hold.
	Capture *int64
}

// DefaultTTL is how long a record is kept for replay when ClaimParams.TTL is zero.
const DefaultTTL = 24 * time.Hour

// MaxKeyLen is the longest accepted key, in bytes.
const MaxKeyLen = 255

// DefaultMaxResponseBytes is the largest stored response body. D1 rows are
// at most 2 MB, and bodies are stored base64-encoded.
const DefaultMaxResponseBytes = 1 << 20

// Idempotency is the claim/lease/complete/fail store.
type Idempotency interface {
	// Claim atomically decides who executes key; see the package doc. It
	// returns ErrInvalidKey for a bad key and ErrFingerprintMismatch, with
	// nothing changed, when the stored fingerprint differs.
	Claim(ctx context.Context, p ClaimParams) (ClaimResult, error)
	// Peek returns the record for key without changing it, or ErrNotFound.
	Peek(ctx context.Context, key string) (Record, error)
	// Heartbeat extends the lease of an in-progress record to leaseUntil. It
	// returns ErrFencedOut unless f still holds the record.
	Heartbeat(ctx context.Context, f Fence, leaseUntil, now time.Time) error
	// Complete stores the response and marks the record completed. It returns
	// ErrFencedOut unless f still holds the record, and ErrTooLarge for a body
	// over the limit.
	Complete(ctx context.Context, p CompleteParams) error
	// Fail marks the record failed so that the next Claim takes it over. It
	// returns ErrFencedOut unless f still holds the record.
	Fail(ctx context.Context, f Fence, reason string, now time.Time) error
	// Sweep is the cron backstop for records that nobody finished. It
	// returns how many records it deleted.
	//
	//   - A record in progress whose lease has expired was abandoned (its
	//     owner crashed, or lost its final writes). Sweep returns its charge
	//     (a refund entry) and its unit of free quota (a return entry) and marks it failed, as Fail would: the key stays
	//     bound to its input and a retry executes again. The stale owner is
	//     fenced out, since its record is no longer in progress. So no record
	//     stays in progress past its lease plus one sweep, and no abandoned
	//     call keeps the caller's money longer than that.
	//   - Then it deletes at most limit records whose TTL has expired (and
	//     whose lease, if in progress, has too) and whose money is settled:
	//     completed, or not holding a charge.
	//
	// It fails abandoned records before it refunds them, so a stale owner is
	// fenced out before its charge comes back and can never complete a call
	// whose charge was returned. Refunds are bounded per call (the SQL
	// backend's MaxSweepRefunds), so a cron invocation stays within D1's
	// per-invocation query limit; a larger backlog (more than that many
	// charged calls abandoned at once, say by an outage) is refunded over
	// the next sweeps.
	Sweep(ctx context.Context, now time.Time, limit int) (int, error)
}

// ChargeParams are the arguments of Charge.
type ChargeParams struct {
	Fence
	Caller   string
	Currency string
	Amount   int64
	Now      time.Time
	// KeyID is the caller's key that is charged (Caller.KeyID;
	// OriginalKeyID for the key the caller was created with).
	KeyID string
	// Hold makes the charge the hold of a metered price's maximum
	// (Amount): the Complete captures what the call used and releases the
	// rest (see Holds).
	Hold bool
}

// ClaimChargeParams are the arguments of ClaimCharge: a claim, and the
// charge to take if this claim wins the key.
type ClaimChargeParams struct {
	ClaimParams
	Caller   string
	Currency string
	Amount   int64
	// KeyID is the caller's key that is charged (Caller.KeyID), for
	// per-key spending caps; OriginalKeyID for the key the caller was
	// created with.
	KeyID string
	// Quota, if set, is the tool's free quota: a won claim takes one unit
	// of it, if the caller's usage allows, and then charges nothing. Past
	// the limit Amount is charged; with Amount 0 the result's ChargeErr is
	// ErrQuotaExhausted.
	Quota *Quota
	// Hold makes the charge a hold of Amount, a metered price's maximum
	// (see ChargeParams.Hold).
	Hold bool
}

// ClaimChargeResult is the claim's result and, when the claim was won, the
// charge's.
type ClaimChargeResult struct {
	ClaimResult
	// Charge is Charge's result; set only when Outcome is OutcomeClaimed
	// and ChargeErr is nil. Charged is false when the key already held a
	// charge (a takeover of an abandoned, charged attempt).
	Charge ChargeResult
	// ChargeErr is Charge's error when the claim was won but the charge was
	// not taken: an *InsufficientFundsError or ErrQuotaExhausted (nothing
	// changed but the claim: the caller holds the key and must Fail it) or
	// a database error.
	ChargeErr error
	// Quota reports the free quota, when the claim was won and p.Quota set.
	Quota QuotaResult
}

// ChargeResult reports a charge.
type ChargeResult struct {
	// Charged is false when the key already held a charge (a takeover after
	// a crash): nothing new was taken.
	Charged bool
	Balance int64 // balance after the charge
}

// CreditParams are the arguments of Credit.
type CreditParams struct {
	Caller    string
	Currency  string
	Amount    int64
	Reference string // unique per credit; a repeat is a no-op
	Now       time.Time
}

// CreditResult reports a credit.
type CreditResult struct {
	Applied bool // false when Reference had been credited before
	Balance int64
}

// Entry is one row of the ledger's audit trail.
type Entry struct {
	Caller    string
	Currency  string
	Amount    int64 // signed: credits and refunds positive, charges negative
	Kind      string
	Reference string
	Key       string // idempotency key for charges and refunds
	Topup     string // the top-up of a top-up credit or a reversal
	// Owed is the entry's change to the caller's debt: positive for the
	// part of a reversal the balance could not cover, negative (equal to
	// Amount) for a repayment, 0 otherwise.
	Owed         int64
	BalanceAfter int64
	CreatedAt    time.Time
}

// Ledger is the prepaid ledger.
type Ledger interface {
	// Credit adds amount to the caller's balance once per reference. It
	// returns ErrInvalidAmount, ErrUnknownCurrency, or ErrReferenceConflict
	// when reference was used for a different credit.
	Credit(ctx context.Context, p CreditParams) (CreditResult, error)
	// Charge takes amount from the caller's balance for the key held by the
	// fence. It is a no-op returning Charged=false if the key already holds a
	// charge. It returns ErrFencedOut unless the fence holds an in-progress
	// record, and an *InsufficientFundsError, changing nothing, when the
	// balance does not cover amount.
	Charge(ctx context.Context, p ChargeParams) (ChargeResult, error)
	// Refund returns the key's charge, and its unit of free quota, to the
	// caller. It reports whether a charge or a unit came back (the balance
	// is then 0 for a unit), and is a no-op returning false when the key
	// holds neither (never charged, or already refunded). It returns ErrFencedOut unless f still holds the record in
	// progress: a completed answer is never refunded after the fact.
	Refund(ctx context.Context, f Fence, now time.Time) (refunded bool, balance int64, err error)
	// Balance returns the caller's balance, 0 if it never had one.
	Balance(ctx context.Context, caller, currency string) (int64, error)
	// Entries returns the audit trail of a caller, or of one key when
	// f.Key is set, oldest first.
	Entries(ctx context.Context, f EntryFilter) ([]Entry, error)
}

// EntryFilter selects ledger entries. Empty fields match everything.
type EntryFilter struct {
	Caller string
	Key    string
}

// Caller is an API client. Its keys are stored only as SHA-256 hashes.
type Caller struct {
	ID        string
	Name      string
	KeyHash   []byte // sha256 of the bearer key (of the key it authenticated with, from CallerByKeyHash)
	CreatedAt time.Time
	// KeyID names the key the caller authenticated with (CallerKey.ID),
	// for per-key caps and usage: OriginalKeyID for the key the caller was
	// created with. "" when the caller was not read by a key (CallerByID).
	KeyID string
}

// # Caller keys
//
// A caller has one or more keys (CallerKey), each with its own id, name
// and secret, all spending the caller's one balance. CreateCaller's key
// becomes the key OriginalKeyID (and so did every caller's key when the
// schema grew keys: callers that existed before keep their key). Every
// caller has at least that row, revoked or not. A key hash is unique
// across all callers and keys: it is the one global lookup.
//
// A revoked key stays revoked (RevokedAt never changes again, its hash
// never changes); CallerByKeyHash never finds it. RotateKey gives a valid
// key a new hash under the same id, so whatever is kept per key id (caps,
// counters) continues; the old secret stops at once in the store.
//
// A caller holds at most MaxKeysPerCaller valid keys, its original key
// included: CreateKey counts them in the statement that inserts, so
// concurrent creates never pass the limit. Revoking a key frees its place.

// OriginalKeyID is the id of the key a caller is created with.
const OriginalKeyID = "k_original"

// MaxKeysPerCaller is how many valid (not revoked) keys a caller may hold.
const MaxKeysPerCaller = 100

// CallerKey is one of a caller's keys.
type CallerKey struct {
	Caller    string
	ID        string
	Name      string
	KeyHash   []byte // sha256 of the secret
	CreatedAt time.Time
	// RevokedAt is when the key was revoked; zero while it is valid.
	RevokedAt time.Time
	// LastUsedAt is the latest CallerByKeyHash that found the key; zero if
	// none. Lookups that a cache answers do not move it.
	LastUsedAt time.Time
}

// Callers stores API clients and their keys.
type Callers interface {
	// CreateCaller stores c, with c.KeyHash as its key OriginalKeyID. It
	// returns ErrConflict if the ID or key hash is taken.
	CreateCaller(ctx context.Context, c Caller) error
	// CallerByKeyHash returns the caller one of whose valid (not revoked)
	// keys hashes to hash, with KeyID and KeyHash set, and records now as
	// the key's LastUsedAt, in one statement. It returns ErrNotFound for an
	// unknown or revoked key.
	CallerByKeyHash(ctx context.Context, hash []byte, now time.Time) (Caller, error)
	// CallerByID returns the caller with id (KeyID ""), or ErrNotFound.
	CallerByID(ctx context.Context, id string) (Caller, error)
	// CreateKey stores k as a new key of k.Caller. It returns ErrNotFound
	// for an unknown caller, ErrTooManyKeys when the caller already holds
	// MaxKeysPerCaller valid keys, ErrConflict when the caller has a key
	// k.ID or the hash is taken, and ErrInvalidArgument for an empty id,
	// name or hash, storing nothing.
	CreateKey(ctx context.Context, k CallerKey) error
	// Keys returns the caller's keys, oldest first. It returns ErrNotFound
	// for an unknown caller.
	Keys(ctx context.Context, caller string) ([]CallerKey, error)
	// RevokeKey revokes the caller's key id at now and returns it. Revoking
	// a revoked key changes nothing and returns it with its first
	// RevokedAt. It returns ErrNotFound for an unknown caller or key.
	RevokeKey(ctx context.Context, caller, id string, now time.Time) (CallerKey, error)
	// RotateKey replaces the hash of the caller's valid key id with hash
	// and returns the key. It returns ErrNotFound for an unknown caller or
	// key, ErrRevoked for a revoked key and ErrConflict for a hash that is
	// taken, changing nothing.
	RotateKey(ctx context.Context, caller, id string, hash []byte) (CallerKey, error)
}

// Store is everything a toolgate backend provides.
type Store interface {
	Idempotency
	Ledger
	Callers
	Topups
	Payments
	Stats
	Caps
	// ClaimCharge claims p.Key and, if that wins the key (OutcomeClaimed),
	// charges p.Amount to p.Caller for it, exactly as Claim followed by
	// Charge on the claimed fence would. The claim's errors
	// (ErrInvalidKey, ErrFingerprintMismatch, ...) are returned as err with
	// nothing changed; the charge's, once the claim is won, in the result's
	// ChargeErr. Backends whose DbClient is a Batcher do both in one round
	// trip. As with any write, a database error may come after the commit
	// (a lost reply): the key is then claimed and perhaps charged by an
	// owner that never learns it, and a retry after the lease takes it over
	// with the charge inherited (or Sweep refunds it after the TTL).
	ClaimCharge(ctx context.Context, p ClaimChargeParams) (ClaimChargeResult, error)
	// CheckInvariants verifies the charge invariant (see the package doc),
	// the funding invariant (see Topups) and the payment invariant (see
	// Payments) over the whole store and returns an error describing every
	// violation it found.
	CheckInvariants(ctx context.Context) error
}

// ClaimThenCharge is ClaimCharge as two calls on s: Claim, then, if the
// claim was won, Charge on the fence it won. Backends that cannot do both
// in one step use it; the result is the same, in two round trips.
// It refuses a free quota (ErrInvalidArgument): that must be taken in the
// claim's atomic step.
func ClaimThenCharge(ctx context.Context, s Store, p ClaimChargeParams) (ClaimChargeResult, error) {
	if p.Quota != nil {
		return ClaimChargeResult{}, fmt.Errorf("%w: a free quota is taken with the claim, in one step", ErrInvalidArgument)
	}
	if err := ValidateAmount(p.Amount, p.Currency); err != nil {
		return ClaimChargeResult{}, err
	}
	cr, err := s.Claim(ctx, p.ClaimParams)
	if err != nil {
		return ClaimChargeResult{}, err
	}
	res := ClaimChargeResult{ClaimResult: cr}
	if cr.Outcome != OutcomeClaimed {
		return res, nil
	}
	res.Charge, res.ChargeErr = s.Charge(ctx, ChargeParams{
		Fence:  Fence{Key: cr.Record.Key, Owner: cr.Record.Owner, Generation: cr.Record.Generation},
		Caller: p.Caller, Currency: p.Currency, Amount: p.Amount, Now: p.Now, KeyID: p.KeyID, Hold: p.Hold,
	})
	return res, nil
}
