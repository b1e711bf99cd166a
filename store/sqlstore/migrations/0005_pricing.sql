-- toolgate schema, version 5: free quotas per tool (issue 14). See
-- store/quota.go for the quota invariant (17-20); the database refuses what
-- breaks it where a constraint or a trigger can say so. Applied by
-- `wrangler d1 migrations apply` and by sqlstore.Migrate, like 0001.

-- The unit of free quota the record's current incarnation holds, as
-- charge_state holds its charge; quota_window is the window it was taken
-- from (Unix ms), quota_count the units taken over the record's life.
ALTER TABLE idem_records ADD COLUMN quota_state TEXT NOT NULL DEFAULT 'none'
  CHECK (quota_state IN ('none', 'taken', 'returned'));
ALTER TABLE idem_records ADD COLUMN quota_window INTEGER;
ALTER TABLE idem_records ADD COLUMN quota_count INTEGER NOT NULL DEFAULT 0;

-- A caller's free calls of a tool per window. Keyed by caller first, like
-- every funding table.
CREATE TABLE IF NOT EXISTS quota_usage (
  caller       TEXT NOT NULL,
  tool         TEXT NOT NULL,
  window_start INTEGER NOT NULL,
  used         INTEGER NOT NULL CHECK (used >= 0),
  updated_at   INTEGER NOT NULL,
  PRIMARY KEY (caller, tool, window_start)
);

-- Every take and return of a unit, append-only; quota_usage follows by
-- trigger, as balances follow ledger_entries.
CREATE TABLE IF NOT EXISTS quota_entries (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  caller       TEXT NOT NULL,
  tool         TEXT NOT NULL,
  window_start INTEGER NOT NULL,
  kind         TEXT NOT NULL CHECK (kind IN ('take', 'return')),
  reference    TEXT NOT NULL UNIQUE,   -- kind:key:incarnation:quota_count
  idem_key     TEXT NOT NULL,
  incarnation  TEXT NOT NULL,
  used_after   INTEGER NOT NULL CHECK (used_after >= 0),
  created_at   INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS quota_entries_caller ON quota_entries (caller, tool, window_start, id);
CREATE INDEX IF NOT EXISTS quota_entries_idem_key ON quota_entries (idem_key);

-- Invariant 17 and 19, enforced by the database: a key never holds two
-- units, nor a unit and a charge, and a return gives back exactly the unit
-- the key holds, to its window.
CREATE TRIGGER IF NOT EXISTS quota_entries_guard BEFORE INSERT ON quota_entries
BEGIN
  SELECT RAISE(ABORT, 'quota invariant: key already holds a unit or a charge')
    WHERE NEW.kind = 'take' AND EXISTS (SELECT 1 FROM idem_records WHERE key = NEW.idem_key
      AND (quota_state = 'taken' OR charge_state = 'charged'));
  SELECT RAISE(ABORT, 'quota invariant: return without a unit taken')
    WHERE NEW.kind = 'return' AND NOT EXISTS (SELECT 1 FROM idem_records WHERE key = NEW.idem_key
      AND quota_state = 'taken' AND quota_window = NEW.window_start AND incarnation = NEW.incarnation);
  SELECT RAISE(ABORT, 'quota invariant: no record for key')
    WHERE NOT EXISTS (SELECT 1 FROM idem_records WHERE key = NEW.idem_key);
END;

CREATE TRIGGER IF NOT EXISTS quota_entries_apply AFTER INSERT ON quota_entries
BEGIN
  INSERT INTO quota_usage (caller, tool, window_start, used, updated_at)
    VALUES (NEW.caller, NEW.tool, NEW.window_start, 0, NEW.created_at)
    ON CONFLICT (caller, tool, window_start) DO NOTHING;
  UPDATE quota_usage SET used = used + CASE NEW.kind WHEN 'take' THEN 1 ELSE -1 END, updated_at = NEW.created_at
    WHERE caller = NEW.caller AND tool = NEW.tool AND window_start = NEW.window_start;
  UPDATE idem_records SET
      quota_state  = CASE NEW.kind WHEN 'take' THEN 'taken' ELSE 'returned' END,
      quota_window = NEW.window_start,
      quota_count  = quota_count + (NEW.kind = 'take'),
      updated_at   = NEW.created_at
    WHERE key = NEW.idem_key;
END;

CREATE TRIGGER IF NOT EXISTS quota_entries_no_update BEFORE UPDATE ON quota_entries
BEGIN
  SELECT RAISE(ABORT, 'quota entries are append-only');
END;

CREATE TRIGGER IF NOT EXISTS quota_entries_no_delete BEFORE DELETE ON quota_entries
BEGIN
  SELECT RAISE(ABORT, 'quota entries are append-only');
END;

-- A charge on a key that holds a unit of quota is refused too (17).
CREATE TRIGGER IF NOT EXISTS ledger_entries_quota_guard BEFORE INSERT ON ledger_entries
WHEN NEW.kind = 'charge'
BEGIN
  SELECT RAISE(ABORT, 'quota invariant: key holds a unit of free quota')
    WHERE (SELECT quota_state FROM idem_records WHERE key = NEW.idem_key) = 'taken';
END;

-- Spending caps (store/caps.go, invariants 21-22). The key a charge was
-- made with ('' the caller's original key), for per-key caps.
ALTER TABLE ledger_entries ADD COLUMN key_id TEXT NOT NULL DEFAULT '';

-- A cap per (caller, key, currency); key_id '*' is the caller as a whole.
CREATE TABLE IF NOT EXISTS spend_caps (
  caller       TEXT NOT NULL,
  key_id       TEXT NOT NULL,
  currency     TEXT NOT NULL,
  limit_amount INTEGER NOT NULL CHECK (limit_amount >= 0 AND limit_amount <= 9007199254740991),
  reset        TEXT NOT NULL CHECK (reset IN ('daily', 'weekly', 'monthly', 'never')),
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL,
  PRIMARY KEY (caller, key_id, currency)
);

-- The spend of a cap's window (window_start in Unix ms; 0 for never),
-- kept by ledger_entries_spend in the statement that writes the entry.
-- limit_at is the cap in force at the window's last charge: a spend above
-- it is refused by the database, whatever the statement.
CREATE TABLE IF NOT EXISTS cap_spend (
  caller       TEXT NOT NULL,
  key_id       TEXT NOT NULL,
  currency     TEXT NOT NULL,
  reset        TEXT NOT NULL,
  window_start INTEGER NOT NULL,
  spent        INTEGER NOT NULL CHECK (spent >= 0),
  limit_at     INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL,
  PRIMARY KEY (caller, key_id, currency, reset, window_start),
  CHECK (spent <= limit_at)
);

-- A charge adds to the spend of every cap that covers it, in the window of
-- the charge (a cap's first charge in a window makes its row); a refund
-- takes it back from the row of the window of the charge it refunds (the
-- charge whose reference ends as the refund's does), if there is one: a
-- window that has a row counts every charge of it (SetCap makes the row of
-- the current window from the ledger). A refund never takes a row below
-- zero: a cap set just before a reset boundary, committing after a charge
-- of the next window, leaves that charge out of the next window's row (it
-- may overspend that window by that charge), and its refund must still go
-- through rather than fail for ever. The window expression is sqlstore's
-- capWindow.
CREATE TRIGGER IF NOT EXISTS ledger_entries_spend AFTER INSERT ON ledger_entries
WHEN NEW.kind IN ('charge', 'refund')
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
      WHERE (ch.id = NEW.id OR (NEW.kind = 'refund' AND ch.reference = 'charge:' || substr(NEW.reference, 8)))
        AND ch.kind = 'charge'
        AND cap_spend.caller = c.caller AND cap_spend.key_id = c.key_id AND cap_spend.currency = c.currency
        AND cap_spend.reset = c.reset
        AND cap_spend.window_start = CASE c.reset WHEN 'daily' THEN ch.created_at - ch.created_at % 86400000
          WHEN 'weekly' THEN ch.created_at - (ch.created_at + 259200000) % 604800000
          WHEN 'monthly' THEN CAST(strftime('%s', ch.created_at / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000
          ELSE 0 END);
END;
