-- toolgate schema, version 1. Applied by `wrangler d1 migrations apply` and by
-- sqlstore.Migrate (the same file, embedded). Instants are Unix milliseconds.
-- Money is int64 minor units below 2^53.

CREATE TABLE IF NOT EXISTS idem_records (
  key              TEXT PRIMARY KEY,
  status           TEXT NOT NULL CHECK (status IN ('in_progress', 'completed', 'failed')),
  owner            TEXT NOT NULL,
  generation       INTEGER NOT NULL CHECK (generation >= 1),
  incarnation      TEXT NOT NULL,           -- renewed when an expired record is claimed afresh
  lease_expires_at INTEGER NOT NULL,
  expires_at       INTEGER NOT NULL,
  fingerprint      TEXT NOT NULL,
  resp_status      INTEGER,
  resp_type        TEXT,
  resp_body        TEXT,                    -- base64
  error            TEXT,
  charge_state     TEXT NOT NULL DEFAULT 'none' CHECK (charge_state IN ('none', 'charged', 'refunded')),
  charge_count     INTEGER NOT NULL DEFAULT 0,
  charge_caller    TEXT,
  charge_currency  TEXT,
  charge_amount    INTEGER NOT NULL DEFAULT 0 CHECK (charge_amount >= 0 AND charge_amount <= 9007199254740991),
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS idem_records_expires_at ON idem_records (expires_at);

CREATE TABLE IF NOT EXISTS balances (
  caller     TEXT NOT NULL,
  currency   TEXT NOT NULL,
  balance    INTEGER NOT NULL CHECK (balance >= 0 AND balance <= 9007199254740991),
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (caller, currency)
);

-- Every ledger mutation is a row here; balances follow by trigger, so a
-- balance can never move without an entry, and never below zero.
CREATE TABLE IF NOT EXISTS ledger_entries (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  caller        TEXT NOT NULL,
  currency      TEXT NOT NULL,
  amount        INTEGER NOT NULL CHECK (amount <> 0),
  kind          TEXT NOT NULL CHECK (kind IN ('credit', 'charge', 'refund')),
  reference     TEXT NOT NULL UNIQUE,       -- credit: caller's reference; charge/refund: derived from the key
  idem_key      TEXT,
  incarnation   TEXT,
  generation    INTEGER,
  balance_after INTEGER NOT NULL,
  created_at    INTEGER NOT NULL,
  CHECK ((kind = 'credit' AND amount > 0) OR (kind = 'refund' AND amount > 0) OR (kind = 'charge' AND amount < 0)),
  CHECK (kind = 'credit' OR idem_key IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS ledger_entries_caller ON ledger_entries (caller, id);
CREATE INDEX IF NOT EXISTS ledger_entries_idem_key ON ledger_entries (idem_key);

-- The charge invariant, enforced by the database itself: a key is never
-- charged twice without a refund in between, and a refund returns exactly
-- the open charge of a key that has one.
CREATE TRIGGER IF NOT EXISTS ledger_entries_guard BEFORE INSERT ON ledger_entries
WHEN NEW.kind <> 'credit'
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

CREATE TRIGGER IF NOT EXISTS ledger_entries_apply AFTER INSERT ON ledger_entries
BEGIN
  INSERT INTO balances (caller, currency, balance, updated_at)
    SELECT NEW.caller, NEW.currency, 0, NEW.created_at
    WHERE NOT EXISTS (SELECT 1 FROM balances WHERE caller = NEW.caller AND currency = NEW.currency);
  UPDATE balances SET balance = balance + NEW.amount, updated_at = NEW.created_at
    WHERE caller = NEW.caller AND currency = NEW.currency;
  UPDATE idem_records SET
      charge_state    = CASE NEW.kind WHEN 'charge' THEN 'charged' ELSE 'refunded' END,
      charge_count    = charge_count + (NEW.kind = 'charge'),
      charge_caller   = NEW.caller,
      charge_currency = NEW.currency,
      charge_amount   = abs(NEW.amount),
      updated_at      = NEW.created_at
    WHERE NEW.kind <> 'credit' AND key = NEW.idem_key;
END;

-- Entries are an audit trail: they are never changed or removed.
CREATE TRIGGER IF NOT EXISTS ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN
  SELECT RAISE(ABORT, 'ledger entries are append-only');
END;

CREATE TRIGGER IF NOT EXISTS ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
  SELECT RAISE(ABORT, 'ledger entries are append-only');
END;

CREATE TABLE IF NOT EXISTS callers (
  id         TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  key_hash   TEXT NOT NULL UNIQUE,          -- hex sha256 of the bearer key
  created_at INTEGER NOT NULL
);
