-- toolgate schema, version 6: several keys per caller (issue 14). See store/store.go "Caller keys". Applied by
-- `wrangler d1 migrations apply` and by sqlstore.Migrate, like 0001.

-- A caller's keys, keyed by caller first like every per-caller table; key_hash is the one global lookup (as
-- callers.key_hash was). A key is never deleted: revoked_at marks it, and a revoked key stays revoked with the
-- hash it had. Rotation gives a valid key a new hash under the same id, so what is kept per key id continues.
CREATE TABLE IF NOT EXISTS caller_keys (
  caller       TEXT NOT NULL,
  id           TEXT NOT NULL,
  name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  key_hash     TEXT NOT NULL UNIQUE,          -- hex sha256 of the secret
  created_at   INTEGER NOT NULL,
  revoked_at   INTEGER,                       -- Unix ms; NULL while the key is valid
  last_used_at INTEGER,                       -- Unix ms of the latest lookup that reached the database
  PRIMARY KEY (caller, id)
);

-- Callers that exist keep their key: it becomes their key 'k_original' (store.OriginalKeyID). callers.key_hash
-- stays as it was and is no longer read; after a rotation of k_original it holds the old hash.
INSERT OR IGNORE INTO caller_keys (caller, id, name, key_hash, created_at)
  SELECT id, 'k_original', 'original', key_hash, created_at FROM callers;

-- So does every caller created from now on, whoever inserts it (CreateCaller, the seed files), in the same
-- statement: a hash taken by any key fails the caller's insert.
CREATE TRIGGER IF NOT EXISTS callers_original_key AFTER INSERT ON callers
BEGIN
  INSERT INTO caller_keys (caller, id, name, key_hash, created_at)
    VALUES (NEW.id, 'k_original', 'original', NEW.key_hash, NEW.created_at);
END;

CREATE TRIGGER IF NOT EXISTS caller_keys_revoked_stays BEFORE UPDATE OF revoked_at, key_hash ON caller_keys
WHEN OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS NOT OLD.revoked_at OR NEW.key_hash <> OLD.key_hash)
BEGIN
  SELECT RAISE(ABORT, 'a revoked key stays revoked');
END;

CREATE TRIGGER IF NOT EXISTS caller_keys_no_delete BEFORE DELETE ON caller_keys
BEGIN
  SELECT RAISE(ABORT, 'caller keys are revoked, never deleted');
END;
