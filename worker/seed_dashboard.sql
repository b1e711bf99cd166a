-- Demo history for the dashboard (`make seed-local`, the LOCAL D1 of `make dev` only): 14 days of calls by a
-- second demo caller, "demo-history", so that /dashboard/ shows a chart at once. It holds no usable key (its
-- key_hash is not a hash), and the demo caller of seed.sql is untouched, so the README's walkthrough is too.
-- Money goes through the ledger as a real call's would (records, charge and refund entries, the triggers move
-- the balances and the usage counters); the call counts are written to usage_hourly. Idempotent: everything is
-- inserted once, with the history's credit; a second run changes nothing.
INSERT INTO callers (id, name, key_hash, created_at)
  SELECT 'demo-history', 'Demo history (seeded, cannot call)', 'none:demo-history', (CAST(strftime('%s', 'now') AS INTEGER) / 86400 - 15) * 86400000
  WHERE NOT EXISTS (SELECT 1 FROM callers WHERE id = 'demo-history');

-- One record per call: completed (echo) or failed and refunded (flaky), noon UTC of each of the last 14 days.
WITH RECURSIVE d(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM d WHERE n < 14),
  i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < 6),
  calls AS (SELECT d.n AS day, i.n AS k,
      (CAST(strftime('%s', 'now') AS INTEGER) / 86400 - d.n) * 86400000 + 43200000 + i.n * 60000 AS at,
      CASE WHEN i.n = 1 AND d.n % 3 = 0 THEN 'flaky' ELSE 'echo' END AS tool
    FROM d, i WHERE i.n <= 2 + (d.n * 7) % 5)
INSERT INTO idem_records (key, status, owner, generation, incarnation, lease_expires_at, expires_at, fingerprint,
    resp_status, resp_type, resp_body, error, charge_state, charge_count, charge_amount, created_at, updated_at, tool, caller)
  SELECT 'demo-history:' || day || ':' || k, CASE tool WHEN 'flaky' THEN 'failed' ELSE 'completed' END, 'seed', 1,
    'seed:' || at, at, at + 86400000, 'seed',
    CASE tool WHEN 'flaky' THEN NULL ELSE 200 END, CASE tool WHEN 'flaky' THEN NULL ELSE 'application/json' END,
    CASE tool WHEN 'flaky' THEN NULL ELSE 'e30=' END, CASE tool WHEN 'flaky' THEN 'the tool answered 500' END,
    'none', 0, 0, at, at, tool, 'demo-history'
  FROM calls WHERE NOT EXISTS (SELECT 1 FROM ledger_entries WHERE reference = 'credit:demo-history-seed');

-- The ledger: a 20.00 USD credit 15 days ago, then each call's charge, and the flaky calls' refunds; balance_after
-- is the running sum, as the invariants require.
WITH RECURSIVE d(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM d WHERE n < 14),
  i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < 6),
  calls AS (SELECT 'demo-history:' || d.n || ':' || i.n AS key,
      (CAST(strftime('%s', 'now') AS INTEGER) / 86400 - d.n) * 86400000 + 43200000 + i.n * 60000 AS at,
      CASE WHEN i.n = 1 AND d.n % 3 = 0 THEN 10 ELSE 5 END AS price
    FROM d, i WHERE i.n <= 2 + (d.n * 7) % 5),
  ev AS (
    SELECT (CAST(strftime('%s', 'now') AS INTEGER) / 86400 - 15) * 86400000 AS at, 0 AS ord, 'credit' AS kind,
      2000 AS amount, 'credit:demo-history-seed' AS ref, NULL AS key, NULL AS inc
    UNION ALL SELECT at, 1, 'charge', -price, 'charge:' || key || ':seed:' || at || ':1', key, 'seed:' || at FROM calls
    UNION ALL SELECT at + 1000, 2, 'refund', price, 'refund:' || key || ':seed:' || at || ':1', key, 'seed:' || at
      FROM calls WHERE price = 10)
INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key, incarnation, generation, balance_after, created_at)
  SELECT 'demo-history', 'USD', amount, kind, ref, key, inc, CASE WHEN key IS NULL THEN NULL ELSE 1 END,
    sum(amount) OVER (ORDER BY at, ord ROWS UNBOUNDED PRECEDING), at
  FROM ev WHERE NOT EXISTS (SELECT 1 FROM ledger_entries WHERE reference = 'credit:demo-history-seed')
  ORDER BY at, ord;

-- The call counters (the money counters came with the entries): each echo call executed in about 40 ms, every
-- other one replayed once, each flaky call a refunded 5xx. Set, not added, so a second run changes nothing.
WITH RECURSIVE d(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM d WHERE n < 14),
  i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < 6),
  calls AS (SELECT i.n AS k,
      (CAST(strftime('%s', 'now') AS INTEGER) / 86400 - d.n) * 86400000 + 43200000 + i.n * 60000 AS at,
      CASE WHEN i.n = 1 AND d.n % 3 = 0 THEN 'flaky' ELSE 'echo' END AS tool
    FROM d, i WHERE i.n <= 2 + (d.n * 7) % 5)
INSERT INTO usage_hourly (hour, caller, tool, currency, calls, replays, fail_5xx, latency_ms, lat_100, last_at)
  SELECT (at / 3600000) * 3600000 AS h, 'demo-history', tool, 'USD', sum(tool = 'echo'), sum(tool = 'echo' AND k % 2 = 0),
    sum(tool = 'flaky'), 40 * sum(tool = 'echo'), sum(tool = 'echo'), max(at)
  FROM calls WHERE 1 GROUP BY h, tool
  ON CONFLICT (hour, caller, tool, currency) DO UPDATE SET calls = excluded.calls, replays = excluded.replays,
    fail_5xx = excluded.fail_5xx, latency_ms = excluded.latency_ms, lat_100 = excluded.lat_100, last_at = max(last_at, excluded.last_at);
