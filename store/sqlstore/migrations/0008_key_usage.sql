-- toolgate schema, version 8: usage counters per key (issue 14). See store/keyusage.go. Applied by
-- `wrangler d1 migrations apply` and by sqlstore.Migrate, like 0001.
--
-- usage_keys_hourly holds one row per (caller, UTC hour, key, tool, currency), keyed by caller first like
-- every per-caller table. Its money columns are written by the trigger below from ledger_entries, in the
-- entry's own statement, so they equal the ledger by construction: a charge counts under its key_id, a
-- refund or a release (the unused part of a metered hold given back) under the key of the charge it reduces
-- (the charge whose reference ends as its own does). Its call columns are written by the engine with the
-- Complete, through the view usage_calls below, in the statement that counts the call in usage_hourly. The
-- cron sweep deletes rows after the retention, as usage_hourly's.

CREATE TABLE IF NOT EXISTS usage_keys_hourly (
  caller     TEXT NOT NULL,
  hour       INTEGER NOT NULL CHECK (hour % 3600000 = 0),   -- Unix ms at the start of the UTC hour
  key_id     TEXT NOT NULL,                                 -- the ledger's key_id ('' before keys existed)
  tool       TEXT NOT NULL,                                 -- '' for entries of no record
  currency   TEXT NOT NULL,
  calls      INTEGER NOT NULL DEFAULT 0 CHECK (calls >= 0),      -- upstream executions whose answer was stored
  free_calls INTEGER NOT NULL DEFAULT 0 CHECK (free_calls >= 0), -- of those, of a free tool
  charges    INTEGER NOT NULL DEFAULT 0 CHECK (charges >= 0),    -- ledger charge entries
  charged    INTEGER NOT NULL DEFAULT 0 CHECK (charged >= 0),    -- their amount, minor units
  refunds    INTEGER NOT NULL DEFAULT 0 CHECK (refunds >= 0),
  refunded   INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0),
  released   INTEGER NOT NULL DEFAULT 0 CHECK (released >= 0),   -- metered holds given back (ledger 'release')
  PRIMARY KEY (caller, hour, key_id, tool, currency)
);

CREATE INDEX IF NOT EXISTS usage_keys_hourly_hour ON usage_keys_hourly (hour);

-- The key a refund or release reduces is its charge's: the entry whose reference is 'charge:' followed by
-- what follows the entry's own kind prefix. (No statement in the body may end with a CASE's END: the
-- migration splitter would take it for the trigger's.)
CREATE TRIGGER IF NOT EXISTS usage_keys_hourly_from_ledger AFTER INSERT ON ledger_entries
WHEN NEW.kind IN ('charge', 'refund', 'release')
BEGIN
  INSERT INTO usage_keys_hourly (caller, hour, key_id, tool, currency, charges, charged, refunds, refunded, released)
    SELECT NEW.caller, (NEW.created_at / 3600000) * 3600000,
      CASE WHEN NEW.kind = 'charge' THEN NEW.key_id
        ELSE coalesce((SELECT ch.key_id FROM ledger_entries ch
          WHERE ch.reference = 'charge:' || substr(NEW.reference, instr(NEW.reference, ':') + 1)), NEW.key_id) END,
      coalesce((SELECT tool FROM idem_records WHERE key = NEW.idem_key), ''), NEW.currency,
      NEW.kind = 'charge', CASE WHEN NEW.kind = 'charge' THEN -NEW.amount ELSE 0 END,
      NEW.kind = 'refund', CASE WHEN NEW.kind = 'refund' THEN NEW.amount ELSE 0 END,
      CASE WHEN NEW.kind = 'release' THEN NEW.amount ELSE 0 END
    WHERE 1
    ON CONFLICT (caller, hour, key_id, tool, currency) DO UPDATE SET
      charges = charges + excluded.charges, charged = charged + excluded.charged,
      refunds = refunds + excluded.refunds, refunded = refunded + excluded.refunded,
      released = released + excluded.released;
END;

-- An executed call's counters go through this view: one row inserted adds to usage_hourly (every column,
-- as sqlstore's usageUpsertSQL) and to usage_keys_hourly (calls and free calls under key_id), so counting
-- a call per key costs no statement more than counting it at all. The view itself holds nothing.
CREATE VIEW IF NOT EXISTS usage_calls AS
  SELECT hour, caller, tool, currency, calls, free_calls, replays, waits, r402, r409, r422, fail_5xx, fail_timeout,
    fail_4xx, latency_ms, lat_100, lat_300, lat_1000, lat_3000, lat_inf, last_at, '' AS key_id
  FROM usage_hourly WHERE 0;

CREATE TRIGGER IF NOT EXISTS usage_calls_insert INSTEAD OF INSERT ON usage_calls
BEGIN
  INSERT INTO usage_hourly (hour, caller, tool, currency, calls, free_calls, replays, waits, r402, r409, r422,
      fail_5xx, fail_timeout, fail_4xx, latency_ms, lat_100, lat_300, lat_1000, lat_3000, lat_inf, last_at)
    VALUES (NEW.hour, NEW.caller, NEW.tool, NEW.currency, NEW.calls, NEW.free_calls, NEW.replays, NEW.waits,
      NEW.r402, NEW.r409, NEW.r422, NEW.fail_5xx, NEW.fail_timeout, NEW.fail_4xx, NEW.latency_ms, NEW.lat_100,
      NEW.lat_300, NEW.lat_1000, NEW.lat_3000, NEW.lat_inf, NEW.last_at)
    ON CONFLICT (hour, caller, tool, currency) DO UPDATE SET
      calls = calls + excluded.calls, free_calls = free_calls + excluded.free_calls, replays = replays + excluded.replays,
      waits = waits + excluded.waits, r402 = r402 + excluded.r402, r409 = r409 + excluded.r409,
      r422 = r422 + excluded.r422, fail_5xx = fail_5xx + excluded.fail_5xx,
      fail_timeout = fail_timeout + excluded.fail_timeout, fail_4xx = fail_4xx + excluded.fail_4xx,
      latency_ms = latency_ms + excluded.latency_ms, lat_100 = lat_100 + excluded.lat_100,
      lat_300 = lat_300 + excluded.lat_300, lat_1000 = lat_1000 + excluded.lat_1000,
      lat_3000 = lat_3000 + excluded.lat_3000, lat_inf = lat_inf + excluded.lat_inf,
      last_at = max(last_at, excluded.last_at);
  INSERT INTO usage_keys_hourly (caller, hour, key_id, tool, currency, calls, free_calls)
    VALUES (NEW.caller, NEW.hour, NEW.key_id, NEW.tool, NEW.currency, NEW.calls, NEW.free_calls)
    ON CONFLICT (caller, hour, key_id, tool, currency) DO UPDATE SET
      calls = calls + excluded.calls, free_calls = free_calls + excluded.free_calls;
END;

-- The money of the hours usage_hourly still keeps, from the ledger as the trigger would have counted it
-- (calls made before this migration are not known per key: they count at caller level only).
INSERT INTO usage_keys_hourly (caller, hour, key_id, tool, currency, charges, charged, refunds, refunded, released)
  SELECT e.caller, (e.created_at / 3600000) * 3600000 AS h,
    CASE WHEN e.kind = 'charge' THEN e.key_id
      ELSE coalesce((SELECT ch.key_id FROM ledger_entries ch
        WHERE ch.reference = 'charge:' || substr(e.reference, instr(e.reference, ':') + 1)), e.key_id) END AS k,
    coalesce((SELECT tool FROM idem_records WHERE key = e.idem_key), '') AS t, e.currency,
    sum(e.kind = 'charge'), sum(CASE WHEN e.kind = 'charge' THEN -e.amount ELSE 0 END),
    sum(e.kind = 'refund'), sum(CASE WHEN e.kind = 'refund' THEN e.amount ELSE 0 END),
    sum(CASE WHEN e.kind = 'release' THEN e.amount ELSE 0 END)
  FROM ledger_entries e
  WHERE e.kind IN ('charge', 'refund', 'release') AND e.created_at >= coalesce((SELECT min(hour) FROM usage_hourly), 0)
  GROUP BY e.caller, h, k, t, e.currency;
