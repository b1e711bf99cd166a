-- toolgate schema, version 7: metered prices (issue 14). See store/holds.go for the hold invariant (23-26); the
-- database refuses what breaks it where a constraint or a trigger can say so. Applied by
-- `wrangler d1 migrations apply` and by sqlstore.Migrate, like 0001.
--
-- A metered call holds its tool's maximum when it is claimed: a charge entry of the maximum marked hold = 1. When
-- its answer is stored it captures what it used and gives the rest back: a 'release' entry, written by a trigger
-- of the Complete's own UPDATE, so one statement on every engine. A failure refunds the whole hold, as for any
-- charge.

-- The record's hold: 'held' while the current charge is an open hold, 'captured' once the Complete captured it;
-- hold_max is the maximum held (the charge's amount when it was taken), so charge_amount <= hold_max always;
-- hold_capture is what the Complete asked to capture (NULL: all of it).
ALTER TABLE idem_records ADD COLUMN hold_state TEXT NOT NULL DEFAULT 'none'
  CHECK (hold_state IN ('none', 'held', 'captured'));
ALTER TABLE idem_records ADD COLUMN hold_max INTEGER NOT NULL DEFAULT 0 CHECK (hold_max >= 0);
ALTER TABLE idem_records ADD COLUMN hold_capture INTEGER CHECK (hold_capture IS NULL OR hold_capture >= 0);

-- What the holds gave back, per hour, caller, tool and currency: the spend of an hour is charged - refunded -
-- released.
ALTER TABLE usage_hourly ADD COLUMN released INTEGER NOT NULL DEFAULT 0 CHECK (released >= 0);

-- SQLite cannot alter a CHECK, so ledger_entries is rebuilt with the kind 'release' and the column hold, as 0002
-- rebuilt it. Its triggers go with the old table and are created again below; payments_credited_back (0004)
-- names the table, so it goes first and comes back after the rename.
DROP TRIGGER IF EXISTS ledger_entries_guard;
DROP TRIGGER IF EXISTS ledger_entries_apply;
DROP TRIGGER IF EXISTS ledger_entries_no_update;
DROP TRIGGER IF EXISTS ledger_entries_no_delete;
DROP TRIGGER IF EXISTS ledger_entries_quota_guard;
DROP TRIGGER IF EXISTS ledger_entries_spend;
DROP TRIGGER IF EXISTS usage_hourly_from_ledger;
DROP TRIGGER IF EXISTS payments_credited_back;

CREATE TABLE ledger_entries_v7 (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  caller        TEXT NOT NULL,
  currency      TEXT NOT NULL,
  amount        INTEGER NOT NULL,
  kind          TEXT NOT NULL CHECK (kind IN ('credit', 'charge', 'refund', 'release', 'reversal', 'repay')),
  reference     TEXT NOT NULL UNIQUE,       -- credit: caller's reference or credit:topup:<rail>:<session>; others derived
  idem_key      TEXT,
  incarnation   TEXT,
  generation    INTEGER,
  balance_after INTEGER NOT NULL,
  created_at    INTEGER NOT NULL,
  topup_id      TEXT,                       -- a top-up's credit, or a reversal of it
  owed_change   INTEGER NOT NULL DEFAULT 0, -- the entry's change to balances.owed
  key_id        TEXT NOT NULL DEFAULT '',   -- the caller's key a charge was made with (0005)
  hold          INTEGER NOT NULL DEFAULT 0, -- 1: this charge is the hold of a metered price's maximum
  CHECK ((kind = 'credit'   AND amount > 0 AND owed_change = 0)
      OR (kind = 'charge'   AND amount < 0 AND owed_change = 0)
      OR (kind = 'refund'   AND amount > 0 AND owed_change = 0)
      -- the unused part of a hold, given back when the call captured what it used
      OR (kind = 'release'  AND amount > 0 AND owed_change = 0)
      -- a reversal takes what the balance has and records the rest as owed
      OR (kind = 'reversal' AND amount <= 0 AND owed_change >= 0 AND (amount < 0 OR owed_change > 0) AND topup_id IS NOT NULL)
      -- a repayment moves money from the balance to the debt
      OR (kind = 'repay'    AND amount < 0 AND owed_change = amount)),
  CHECK ((kind IN ('charge', 'refund', 'release')) = (idem_key IS NOT NULL)),
  CHECK (hold IN (0, 1) AND (hold = 0 OR kind = 'charge'))
);

INSERT INTO ledger_entries_v7 (id, caller, currency, amount, kind, reference, idem_key, incarnation, generation,
    balance_after, created_at, topup_id, owed_change, key_id, hold)
  SELECT id, caller, currency, amount, kind, reference, idem_key, incarnation, generation,
    balance_after, created_at, topup_id, owed_change, key_id, 0
  FROM ledger_entries;

DROP TABLE ledger_entries;

ALTER TABLE ledger_entries_v7 RENAME TO ledger_entries;

CREATE INDEX IF NOT EXISTS ledger_entries_caller ON ledger_entries (caller, id);
CREATE INDEX IF NOT EXISTS ledger_entries_idem_key ON ledger_entries (idem_key);
CREATE INDEX IF NOT EXISTS ledger_entries_topup ON ledger_entries (caller, topup_id) WHERE topup_id IS NOT NULL;

-- The charge invariant, as in 0002, and the hold invariant: a release gives back part of the key's hold (it runs
-- right after the Complete that captured it), never more than it holds.
CREATE TRIGGER IF NOT EXISTS ledger_entries_guard BEFORE INSERT ON ledger_entries
WHEN NEW.kind IN ('charge', 'refund', 'release')
BEGIN
  SELECT RAISE(ABORT, 'charge invariant: no record for key')
    WHERE NOT EXISTS (SELECT 1 FROM idem_records WHERE key = NEW.idem_key);
  SELECT RAISE(ABORT, 'charge invariant: key already charged')
    WHERE NEW.kind = 'charge' AND (SELECT charge_state FROM idem_records WHERE key = NEW.idem_key) = 'charged';
  SELECT RAISE(ABORT, 'charge invariant: refund without an open charge')
    WHERE NEW.kind = 'refund' AND NOT EXISTS (SELECT 1 FROM idem_records
      WHERE key = NEW.idem_key AND charge_state = 'charged' AND charge_amount = NEW.amount
        AND charge_caller = NEW.caller AND charge_currency = NEW.currency);
  SELECT RAISE(ABORT, 'hold invariant: release without an open hold that covers it')
    WHERE NEW.kind = 'release' AND NOT EXISTS (SELECT 1 FROM idem_records
      WHERE key = NEW.idem_key AND charge_state = 'charged' AND hold_state IN ('held', 'captured') AND charge_amount >= NEW.amount
        AND charge_caller = NEW.caller AND charge_currency = NEW.currency);
END;

-- Balances and debts follow the entries, as in 0002. A charge sets the record's hold from its hold column; a
-- release lowers the charge to what was captured (the charge stays open: the key keeps what it used).
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
      hold_state      = CASE WHEN NEW.kind = 'charge' AND NEW.hold = 1 THEN 'held' WHEN NEW.kind = 'charge' THEN 'none' ELSE hold_state END,
      hold_max        = CASE WHEN NEW.kind = 'charge' AND NEW.hold = 1 THEN -NEW.amount WHEN NEW.kind = 'charge' THEN 0 ELSE hold_max END,
      updated_at      = NEW.created_at
    WHERE NEW.kind IN ('charge', 'refund') AND key = NEW.idem_key;
  UPDATE idem_records SET charge_amount = charge_amount - NEW.amount, updated_at = NEW.created_at
    WHERE NEW.kind = 'release' AND key = NEW.idem_key;
END;

CREATE TRIGGER IF NOT EXISTS ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN
  SELECT RAISE(ABORT, 'ledger entries are append-only');
END;

CREATE TRIGGER IF NOT EXISTS ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
  SELECT RAISE(ABORT, 'ledger entries are append-only');
END;

-- As in 0005: a charge on a key that holds a unit of free quota is refused.
CREATE TRIGGER IF NOT EXISTS ledger_entries_quota_guard BEFORE INSERT ON ledger_entries
WHEN NEW.kind = 'charge'
BEGIN
  SELECT RAISE(ABORT, 'quota invariant: key holds a unit of free quota')
    WHERE (SELECT quota_state FROM idem_records WHERE key = NEW.idem_key) = 'taken';
END;

-- As in 0005, and a release takes its amount back from the spend of its charge's window, like a refund (the
-- charge whose reference ends as the release's does).
CREATE TRIGGER IF NOT EXISTS ledger_entries_spend AFTER INSERT ON ledger_entries
WHEN NEW.kind IN ('charge', 'refund', 'release')
BEGIN
  INSERT INTO cap_spend (caller, key_id, currency, reset, window_start, spent, limit_at, updated_at)
    SELECT c.caller, c.key_id, c.currency, c.reset,
      CASE c.reset WHEN 'daily' THEN NEW.created_at - NEW.created_at % 86400000
          WHEN 'weekly' THEN NEW.created_at - (NEW.created_at + 259200000) % 604800000
          WHEN 'monthly' THEN CAST(strftime('%s', NEW.created_at / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000
          ELSE 0 END,
      0, c.limit_amount, NEW.created_at
    FROM spend_caps c
    WHERE NEW.kind = 'charge' AND c.caller = NEW.caller AND c.currency = NEW.currency
      AND (c.key_id = '*' OR c.key_id = NEW.key_id)
    ON CONFLICT (caller, key_id, currency, reset, window_start) DO UPDATE SET limit_at = excluded.limit_at;
  UPDATE cap_spend SET spent = max(spent - NEW.amount, 0), updated_at = NEW.created_at
    WHERE caller = NEW.caller AND EXISTS (SELECT 1 FROM ledger_entries ch JOIN spend_caps c ON c.caller = ch.caller
        AND c.currency = ch.currency AND (c.key_id = '*' OR c.key_id = ch.key_id)
      WHERE (ch.id = NEW.id OR (NEW.kind IN ('refund', 'release')
          AND ch.reference = 'charge:' || substr(NEW.reference, length(NEW.kind) + 2)))
        AND ch.kind = 'charge'
        AND cap_spend.caller = c.caller AND cap_spend.key_id = c.key_id AND cap_spend.currency = c.currency
        AND cap_spend.reset = c.reset
        AND cap_spend.window_start = CASE c.reset WHEN 'daily' THEN ch.created_at - ch.created_at % 86400000
          WHEN 'weekly' THEN ch.created_at - (ch.created_at + 259200000) % 604800000
          WHEN 'monthly' THEN CAST(strftime('%s', ch.created_at / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000
          ELSE 0 END);
END;

-- As in 0003, and releases counted in released. (No statement in the body may end with a CASE's END: the
-- migration splitter would take it for the trigger's.)
CREATE TRIGGER IF NOT EXISTS usage_hourly_from_ledger AFTER INSERT ON ledger_entries
WHEN NEW.kind IN ('charge', 'refund', 'release', 'credit')
BEGIN
  INSERT OR IGNORE INTO usage_hourly (hour, caller, tool, currency)
    VALUES ((NEW.created_at / 3600000) * 3600000, NEW.caller,
      CASE WHEN NEW.kind = 'credit' THEN '' ELSE coalesce((SELECT tool FROM idem_records WHERE key = NEW.idem_key), '') END,
      NEW.currency);
  UPDATE usage_hourly SET
      charges  = charges  + (NEW.kind = 'charge'),
      charged  = charged  + CASE WHEN NEW.kind = 'charge' THEN -NEW.amount ELSE 0 END,
      refunds  = refunds  + (NEW.kind = 'refund'),
      refunded = refunded + CASE WHEN NEW.kind = 'refund' THEN NEW.amount ELSE 0 END,
      released = released + CASE WHEN NEW.kind = 'release' THEN NEW.amount ELSE 0 END,
      credits  = credits  + (NEW.kind = 'credit'),
      credited = credited + CASE WHEN NEW.kind = 'credit' THEN NEW.amount ELSE 0 END,
      last_at  = max(last_at, NEW.created_at)
    WHERE tool = CASE WHEN NEW.kind = 'credit' THEN '' ELSE coalesce((SELECT tool FROM idem_records WHERE key = NEW.idem_key), '') END
      AND hour = (NEW.created_at / 3600000) * 3600000 AND caller = NEW.caller AND currency = NEW.currency;
END;

-- As in 0004.
CREATE TRIGGER IF NOT EXISTS payments_credited_back BEFORE UPDATE OF state ON payments
WHEN NEW.state = 'credited_back' AND OLD.state <> 'credited_back' AND NOT EXISTS (
  SELECT 1 FROM ledger_entries WHERE reference = 'credit:x402:' || NEW.ref AND caller = NEW.caller
    AND currency = NEW.currency AND amount = NEW.amount AND kind = 'credit')
BEGIN
  SELECT RAISE(ABORT, 'payment invariant: credited back without its credit entry');
END;

-- The capture: the Complete that stores a held key's answer moves hold_state from held to captured and sets
-- hold_capture; in the same statement this gives back the part of the hold above it, once (the hold is captured
-- only once: a Complete is fenced to the key's owner while in progress). The entry's key_id is its charge's.
CREATE TRIGGER IF NOT EXISTS idem_records_capture AFTER UPDATE OF hold_state ON idem_records
WHEN OLD.hold_state = 'held' AND NEW.hold_state = 'captured' AND NEW.charge_state = 'charged'
  AND NEW.hold_capture IS NOT NULL AND NEW.hold_capture < NEW.charge_amount
BEGIN
  INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key, incarnation, generation,
      balance_after, created_at, key_id)
    SELECT NEW.charge_caller, NEW.charge_currency, NEW.charge_amount - NEW.hold_capture, 'release',
      'release:' || NEW.key || ':' || NEW.incarnation || ':' || NEW.charge_count, NEW.key, NEW.incarnation, NEW.generation,
      coalesce((SELECT balance FROM balances WHERE caller = NEW.charge_caller AND currency = NEW.charge_currency), 0)
        + NEW.charge_amount - NEW.hold_capture,
      NEW.updated_at,
      coalesce((SELECT key_id FROM ledger_entries
        WHERE reference = 'charge:' || NEW.key || ':' || NEW.incarnation || ':' || NEW.charge_count), '');
END;
