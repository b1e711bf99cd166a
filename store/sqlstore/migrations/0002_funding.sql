-- toolgate schema, version 2: funding (top-ups through a card rail, rail
-- events applied once, reversals and debt). See store/topups.go for the
-- funding invariant (7-11); the database refuses what breaks it where a
-- constraint can say so. Applied by `wrangler d1 migrations apply` and by
-- sqlstore.Migrate, like 0001.
--
-- Every table is keyed by caller first, so that a later shard-by-caller
-- needs no redesign. The global tables are topup_routes, the index from
-- the rail's ids to a caller's top-up (as callers.key_hash is for keys), and
-- parked_reversals, keyed the same way.

-- A debt per (caller, currency): the part of a reversal the balance could
-- not cover. Charges are refused while it is above zero.
ALTER TABLE balances ADD COLUMN owed INTEGER NOT NULL DEFAULT 0 CHECK (owed >= 0 AND owed <= 9007199254740991);

-- SQLite cannot alter a CHECK, so ledger_entries is rebuilt with the new
-- kinds and columns. DROP TABLE fires no delete trigger, but the triggers go
-- first anyway: they name the table being replaced.
DROP TRIGGER IF EXISTS ledger_entries_guard;
DROP TRIGGER IF EXISTS ledger_entries_apply;
DROP TRIGGER IF EXISTS ledger_entries_no_update;
DROP TRIGGER IF EXISTS ledger_entries_no_delete;

CREATE TABLE ledger_entries_v2 (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  caller        TEXT NOT NULL,
  currency      TEXT NOT NULL,
  amount        INTEGER NOT NULL,
  kind          TEXT NOT NULL CHECK (kind IN ('credit', 'charge', 'refund', 'reversal', 'repay')),
  reference     TEXT NOT NULL UNIQUE,       -- credit: caller's reference or credit:topup:<rail>:<session>; others derived
  idem_key      TEXT,
  incarnation   TEXT,
  generation    INTEGER,
  balance_after INTEGER NOT NULL,
  created_at    INTEGER NOT NULL,
  topup_id      TEXT,                       -- a top-up's credit, or a reversal of it
  owed_change   INTEGER NOT NULL DEFAULT 0, -- the entry's change to balances.owed
  CHECK ((kind = 'credit'   AND amount > 0 AND owed_change = 0)
      OR (kind = 'charge'   AND amount < 0 AND owed_change = 0)
      OR (kind = 'refund'   AND amount > 0 AND owed_change = 0)
      -- a reversal takes what the balance has and records the rest as owed
      OR (kind = 'reversal' AND amount <= 0 AND owed_change >= 0 AND (amount < 0 OR owed_change > 0) AND topup_id IS NOT NULL)
      -- a repayment moves money from the balance to the debt
      OR (kind = 'repay'    AND amount < 0 AND owed_change = amount)),
  CHECK ((kind IN ('charge', 'refund')) = (idem_key IS NOT NULL))
);

INSERT INTO ledger_entries_v2 (id, caller, currency, amount, kind, reference, idem_key, incarnation, generation,
    balance_after, created_at, topup_id, owed_change)
  SELECT id, caller, currency, amount, kind, reference, idem_key, incarnation, generation,
    balance_after, created_at, NULL, 0
  FROM ledger_entries;

DROP TABLE ledger_entries;

ALTER TABLE ledger_entries_v2 RENAME TO ledger_entries;

CREATE INDEX IF NOT EXISTS ledger_entries_caller ON ledger_entries (caller, id);
CREATE INDEX IF NOT EXISTS ledger_entries_idem_key ON ledger_entries (idem_key);
-- A top-up's credit and reversals, summed when a reversal is applied.
CREATE INDEX IF NOT EXISTS ledger_entries_topup ON ledger_entries (caller, topup_id) WHERE topup_id IS NOT NULL;

-- The charge invariant, as in 0001: only charges and refunds name a key.
CREATE TRIGGER IF NOT EXISTS ledger_entries_guard BEFORE INSERT ON ledger_entries
WHEN NEW.kind IN ('charge', 'refund')
BEGIN
  SELECT RAISE(ABORT, 'charge invariant: no record for key')
    WHERE NOT EXISTS (SELECT 1 FROM idem_records WHERE key = NEW.idem_key);
  SELECT RAISE(ABORT, 'charge invariant: key already charged')
    WHERE NEW.kind = 'charge' AND (SELECT charge_state FROM idem_records WHERE key = NEW.idem_key) = 'charged';
  SELECT RAISE(ABORT, 'charge invariant: refund without an open charge')
    WHERE NEW.kind = 'refund' AND NOT EXISTS (SELECT 1 FROM idem_records
      WHERE key = NEW.idem_key AND charge_state = 'charged' AND charge_amount = NEW.amount
        AND charge_caller = NEW.caller AND charge_currency = NEW.currency);
END;

-- Balances and debts follow the entries; the CHECKs on balances keep both
-- within [0, 2^53-1], so a balance never goes below zero.
CREATE TRIGGER IF NOT EXISTS ledger_entries_apply AFTER INSERT ON ledger_entries
BEGIN
  INSERT INTO balances (caller, currency, balance, updated_at)
    SELECT NEW.caller, NEW.currency, 0, NEW.created_at
    WHERE NOT EXISTS (SELECT 1 FROM balances WHERE caller = NEW.caller AND currency = NEW.currency);
  UPDATE balances SET balance = balance + NEW.amount, owed = owed + NEW.owed_change, updated_at = NEW.created_at
    WHERE caller = NEW.caller AND currency = NEW.currency;
  UPDATE idem_records SET
      charge_state    = CASE NEW.kind WHEN 'charge' THEN 'charged' ELSE 'refunded' END,
      charge_count    = charge_count + (NEW.kind = 'charge'),
      charge_caller   = NEW.caller,
      charge_currency = NEW.currency,
      charge_amount   = abs(NEW.amount),
      updated_at      = NEW.created_at
    WHERE NEW.kind IN ('charge', 'refund') AND key = NEW.idem_key;
END;

CREATE TRIGGER IF NOT EXISTS ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN
  SELECT RAISE(ABORT, 'ledger entries are append-only');
END;

CREATE TRIGGER IF NOT EXISTS ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
  SELECT RAISE(ABORT, 'ledger entries are append-only');
END;

-- A top-up: created pending before the rail's payment page, then moved by
-- the rail's events. credited and reversed are derived from the ledger (a
-- credit entry and reversal entries naming the top-up).
CREATE TABLE IF NOT EXISTS topups (
  caller            TEXT NOT NULL,
  id                TEXT NOT NULL,
  rail              TEXT NOT NULL,
  idem_key          TEXT NOT NULL,
  fingerprint       TEXT NOT NULL,
  amount            INTEGER NOT NULL CHECK (amount > 0 AND amount <= 9007199254740991),
  currency          TEXT NOT NULL,
  status            TEXT NOT NULL CHECK (status IN ('pending', 'open', 'processing', 'credited', 'failed', 'expired', 'refunded')),
  session_id        TEXT NOT NULL DEFAULT '',
  url               TEXT NOT NULL DEFAULT '',
  payment_intent    TEXT NOT NULL DEFAULT '',
  credited          INTEGER NOT NULL DEFAULT 0 CHECK (credited >= 0 AND credited <= 9007199254740991),
  credited_currency TEXT NOT NULL DEFAULT '',
  reversed          INTEGER NOT NULL DEFAULT 0 CHECK (reversed >= 0 AND reversed <= credited),
  created_at        INTEGER NOT NULL,
  updated_at        INTEGER NOT NULL,
  PRIMARY KEY (caller, id),
  UNIQUE (caller, idem_key),
  CHECK ((status IN ('credited', 'refunded')) = (credited > 0)),
  CHECK (status = 'refunded' OR reversed = 0)
);

-- Rail events applied, one row each, written in the same atomic step as
-- their effects: an event is applied at most once per caller.
CREATE TABLE IF NOT EXISTS payment_events (
  caller     TEXT NOT NULL,
  rail       TEXT NOT NULL,
  event_id   TEXT NOT NULL,
  type       TEXT NOT NULL,
  topup_id   TEXT NOT NULL,
  kind       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (caller, rail, event_id)
);

-- What refunds and disputes asked back, per source (a refunded charge or a
-- dispute). A refund's amount is the rail's running total, so a source keeps
-- its largest; a dispute is recorded once. A top-up's reversal target is
-- min(credited, sum of its sources).
CREATE TABLE IF NOT EXISTS topup_reversals (
  caller     TEXT NOT NULL,
  topup_id   TEXT NOT NULL,
  source     TEXT NOT NULL,
  kind       TEXT NOT NULL CHECK (kind IN ('refund', 'dispute')),
  amount     INTEGER NOT NULL CHECK (amount > 0 AND amount <= 9007199254740991),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (caller, topup_id, source)
);

-- The one global lookup of funding: the rail's ids (a Checkout Session, a
-- PaymentIntent) to the caller's top-up, for events that name only those.
-- The first top-up to record a ref keeps it.
CREATE TABLE IF NOT EXISTS topup_routes (
  rail     TEXT NOT NULL,
  ref      TEXT NOT NULL,
  caller   TEXT NOT NULL,
  topup_id TEXT NOT NULL,
  PRIMARY KEY (rail, ref)
);

-- Refunds and disputes that came before any event of their session recorded
-- the payment (the session's events were failing and being redelivered):
-- they name only the rail's payment id, so they wait here, keyed like
-- topup_routes, until a session event records that payment and asks them
-- back (topup_reversals). A refund keeps its largest running total.
CREATE TABLE IF NOT EXISTS parked_reversals (
  rail        TEXT NOT NULL,
  payment_ref TEXT NOT NULL,
  source      TEXT NOT NULL,
  kind        TEXT NOT NULL CHECK (kind IN ('refund', 'dispute')),
  amount      INTEGER NOT NULL CHECK (amount > 0 AND amount <= 9007199254740991),
  currency    TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (rail, payment_ref, source)
);
