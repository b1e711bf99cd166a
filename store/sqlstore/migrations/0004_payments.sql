-- toolgate schema, version 4: per-call payments (x402, issue 13). See
-- store/payments.go for the payment invariant (12-16); the database refuses
-- what breaks it where a constraint or a trigger can say so. Applied by
-- `wrangler d1 migrations apply` and by sqlstore.Migrate, like 0001.

-- The payment the record's current incarnation holds; NULL for a prepaid
-- or free call. It names a row of payments whose idem_key is the record's
-- key.
ALTER TABLE idem_records ADD COLUMN payment_ref TEXT;

-- A per-call payment, bound to one idempotency key for ever: the primary
-- key (caller, ref) is the signed payment, so the same payment can never
-- be bound to a second key (ErrPaymentReused). Keyed by caller first, like
-- every funding table, so that a later shard-by-caller needs no redesign.
-- The reconciler's queue scan (payments_due) is the one cross-caller read,
-- like the sweep's.
CREATE TABLE IF NOT EXISTS payments (
  caller          TEXT NOT NULL,          -- "x402:" + the payer's lower-case address
  ref             TEXT NOT NULL,          -- the signed payment (network/asset/payer/nonce)
  idem_key        TEXT NOT NULL,          -- the scoped idempotency key it pays for
  rail            TEXT NOT NULL,
  network         TEXT NOT NULL,
  amount          INTEGER NOT NULL CHECK (amount > 0 AND amount <= 9007199254740991),
  currency        TEXT NOT NULL,
  state           TEXT NOT NULL CHECK (state IN ('not_charged', 'verified', 'settlement_pending', 'settled',
                    'settlement_failed', 'credited_back')),
  payload         TEXT NOT NULL,          -- JSON: the signed payment, kept to retry a pending settle
  requirements    TEXT NOT NULL,          -- JSON: what it was matched to
  valid_before    INTEGER NOT NULL,
  tx              TEXT NOT NULL DEFAULT '',
  reason          TEXT NOT NULL DEFAULT '',
  delivered       INTEGER NOT NULL DEFAULT 0 CHECK (delivered IN (0, 1)),
  attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  next_attempt_at INTEGER NOT NULL DEFAULT 0,
  bound_by        TEXT NOT NULL,          -- the claim's owner that bound it (undoes a bind its claim did not win)
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  PRIMARY KEY (caller, ref),
  -- a delivered answer is a stored one: only a payment that reached a
  -- settle can carry it
  CHECK (delivered = 0 OR state IN ('settlement_pending', 'settled', 'settlement_failed', 'credited_back'))
);

-- The payments of a key (PaymentsByKey, and the record's payment_ref).
CREATE UNIQUE INDEX IF NOT EXISTS payments_key ON payments (idem_key, ref);
-- The reconciler's queue (DuePayments).
CREATE INDEX IF NOT EXISTS payments_due ON payments (state, next_attempt_at);

-- A payment's state moves only forwards (invariant 13): verified →
-- settlement_pending → settled | settlement_failed, settled or
-- settlement_pending → credited_back, verified → not_charged. The one way
-- back is to verified, from a state in which nothing moved (not_charged, or
-- a settle refused before any answer was delivered): the same payment
-- retried under its key.
CREATE TRIGGER IF NOT EXISTS payments_forward BEFORE UPDATE OF state ON payments
WHEN NEW.state <> OLD.state AND NOT (
     (OLD.state = 'verified' AND NEW.state IN ('not_charged', 'settlement_pending', 'settled', 'settlement_failed'))
  OR (OLD.state = 'not_charged' AND NEW.state = 'verified')
  OR (OLD.state = 'settlement_failed' AND OLD.delivered = 0 AND NEW.state = 'verified')
  OR (OLD.state = 'settlement_pending' AND NEW.state IN ('settled', 'settlement_failed', 'credited_back'))
  OR (OLD.state = 'settled' AND NEW.state = 'credited_back'))
BEGIN
  SELECT RAISE(ABORT, 'payment invariant: a payment state moves only forwards');
END;

-- A payment is bound for ever (invariant 12): its identity, key and price
-- never change.
CREATE TRIGGER IF NOT EXISTS payments_bound BEFORE UPDATE OF caller, ref, idem_key, amount, currency ON payments
WHEN NEW.caller <> OLD.caller OR NEW.ref <> OLD.ref OR NEW.idem_key <> OLD.idem_key
  OR NEW.amount <> OLD.amount OR NEW.currency <> OLD.currency
BEGIN
  SELECT RAISE(ABORT, 'payment invariant: a payment is bound to its key for ever');
END;

-- Only a bind that its own claim did not win is undone (ClaimPayment): a
-- payment that may have moved money, or was released, is never forgotten.
CREATE TRIGGER IF NOT EXISTS payments_no_delete BEFORE DELETE ON payments
WHEN OLD.state <> 'verified' OR OLD.attempts <> 0
BEGIN
  SELECT RAISE(ABORT, 'payment invariant: payments are kept');
END;

-- credited_back is the state of a payment whose money came back as one
-- credit entry (invariant 15): the entry must exist first.
CREATE TRIGGER IF NOT EXISTS payments_credited_back BEFORE UPDATE OF state ON payments
WHEN NEW.state = 'credited_back' AND OLD.state <> 'credited_back' AND NOT EXISTS (
  SELECT 1 FROM ledger_entries WHERE reference = 'credit:x402:' || NEW.ref AND caller = NEW.caller
    AND currency = NEW.currency AND amount = NEW.amount AND kind = 'credit')
BEGIN
  SELECT RAISE(ABORT, 'payment invariant: credited back without its credit entry');
END;
