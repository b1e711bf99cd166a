-- Demo data for `make dev` (applied by `make seed-local` to the LOCAL D1 only).
-- The demo caller's bearer key is tg_demo_key; only its SHA-256 is stored.
-- Idempotent: running it twice changes nothing.
INSERT INTO callers (id, name, key_hash, created_at)
  SELECT 'demo', 'Demo agent', 'aa09ab5d6fa2b35c24cecd57e67c61e83903dc652ea05190dded171e1ff0fd43', 0
  WHERE NOT EXISTS (SELECT 1 FROM callers WHERE id = 'demo');
-- 10.00 USD; the ledger trigger moves the balance.
INSERT INTO ledger_entries (caller, currency, amount, kind, reference, balance_after, created_at)
  SELECT 'demo', 'USD', 1000, 'credit', 'credit:demo-seed',
    coalesce((SELECT balance FROM balances WHERE caller = 'demo' AND currency = 'USD'), 0) + 1000, 0
  WHERE NOT EXISTS (SELECT 1 FROM ledger_entries WHERE reference = 'credit:demo-seed');
