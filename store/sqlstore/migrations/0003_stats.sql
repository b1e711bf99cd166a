-- toolgate schema, version 3: usage counters for the dashboard (issue 15).
--
-- usage_hourly holds one row per (UTC hour, caller, tool, currency). Its money columns are written by the
-- trigger below from ledger_entries, in the same statement as the entry, so they equal the ledger by
-- construction (charges and refunds per tool, credits with tool ''). Its call columns are written by the
-- engine: an executed call with its Complete (one atomic batch), the outcomes that write nothing (replays,
-- waits, 402, 409, 422, refunded upstream failures) in a background flush (see store.Usage). Rows outlive the
-- idempotency records; the cron sweep deletes them after the retention (STATS_RETENTION_DAYS).

-- The tool and caller of a record, so that ledger entries can be attributed to a tool and the admin API can
-- list calls by tool and caller. Set by the claim; a key is scoped to one (caller, tool), so they never change.
ALTER TABLE idem_records ADD COLUMN tool TEXT;
ALTER TABLE idem_records ADD COLUMN caller TEXT;

CREATE INDEX IF NOT EXISTS idem_records_updated_at ON idem_records (updated_at);

CREATE TABLE IF NOT EXISTS usage_hourly (
  hour          INTEGER NOT NULL CHECK (hour % 3600000 = 0),  -- Unix ms at the start of the UTC hour
  caller        TEXT NOT NULL,
  tool          TEXT NOT NULL,                                -- '' for credits and unattributed entries
  currency      TEXT NOT NULL,
  calls         INTEGER NOT NULL DEFAULT 0 CHECK (calls >= 0),     -- upstream executions whose answer was stored
  free_calls    INTEGER NOT NULL DEFAULT 0 CHECK (free_calls >= 0), -- of those, of a free tool
  replays       INTEGER NOT NULL DEFAULT 0 CHECK (replays >= 0),   -- duplicates answered from the store at once
  waits         INTEGER NOT NULL DEFAULT 0 CHECK (waits >= 0),     -- duplicates that waited for a call in flight
  r402          INTEGER NOT NULL DEFAULT 0 CHECK (r402 >= 0),
  r409          INTEGER NOT NULL DEFAULT 0 CHECK (r409 >= 0),
  r422          INTEGER NOT NULL DEFAULT 0 CHECK (r422 >= 0),
  fail_5xx      INTEGER NOT NULL DEFAULT 0 CHECK (fail_5xx >= 0),  -- upstream 5xx, unreachable, unusable answer
  fail_timeout  INTEGER NOT NULL DEFAULT 0 CHECK (fail_timeout >= 0),
  fail_4xx      INTEGER NOT NULL DEFAULT 0 CHECK (fail_4xx >= 0),  -- upstream 4xx (stored, answered 424)
  charges       INTEGER NOT NULL DEFAULT 0 CHECK (charges >= 0),   -- ledger charge entries
  charged       INTEGER NOT NULL DEFAULT 0 CHECK (charged >= 0),   -- their amount, minor units
  refunds       INTEGER NOT NULL DEFAULT 0 CHECK (refunds >= 0),
  refunded      INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0),
  credits       INTEGER NOT NULL DEFAULT 0 CHECK (credits >= 0),   -- admin credits and top-ups
  credited      INTEGER NOT NULL DEFAULT 0 CHECK (credited >= 0),
  latency_ms    INTEGER NOT NULL DEFAULT 0 CHECK (latency_ms >= 0), -- sum over calls, upstream time
  lat_100       INTEGER NOT NULL DEFAULT 0,                      -- histogram of calls: <= 100 ms
  lat_300       INTEGER NOT NULL DEFAULT 0,                      -- <= 300 ms
  lat_1000      INTEGER NOT NULL DEFAULT 0,                      -- <= 1 s
  lat_3000      INTEGER NOT NULL DEFAULT 0,                      -- <= 3 s
  lat_inf       INTEGER NOT NULL DEFAULT 0,                      -- > 3 s
  last_at       INTEGER NOT NULL DEFAULT 0,                      -- latest event counted, Unix ms
  PRIMARY KEY (hour, caller, tool, currency)
);

CREATE INDEX IF NOT EXISTS usage_hourly_caller ON usage_hourly (caller, hour);

-- Money counters follow the ledger in the entry's own statement: charges and refunds under the record's tool,
-- credits under tool ''. Entries are append-only, so these columns only grow. (No statement in the body may end
-- with a CASE's END: the migration splitter would take it for the trigger's.)
CREATE TRIGGER IF NOT EXISTS usage_hourly_from_ledger AFTER INSERT ON ledger_entries
WHEN NEW.kind IN ('charge', 'refund', 'credit')
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
      credits  = credits  + (NEW.kind = 'credit'),
      credited = credited + CASE WHEN NEW.kind = 'credit' THEN NEW.amount ELSE 0 END,
      last_at  = max(last_at, NEW.created_at)
    WHERE tool = CASE WHEN NEW.kind = 'credit' THEN '' ELSE coalesce((SELECT tool FROM idem_records WHERE key = NEW.idem_key), '') END
      AND hour = (NEW.created_at / 3600000) * 3600000 AND caller = NEW.caller AND currency = NEW.currency;
END;
