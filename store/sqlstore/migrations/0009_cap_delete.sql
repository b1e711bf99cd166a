-- toolgate schema, version 9: deleting a spending cap (issue 14). See store/caps.go (21-22). Applied by
-- `wrangler d1 migrations apply` and by sqlstore.Migrate, like 0001.
--
-- A cap's windows (cap_spend) go with the cap, in the statement that deletes it: a window left behind would
-- stop following the ledger (no trigger adds a charge to a window of a cap that does not exist), and a cap
-- set again later must count its window's spend from the ledger, as SetCap does for any new cap.
CREATE TRIGGER IF NOT EXISTS spend_caps_delete AFTER DELETE ON spend_caps
BEGIN
  DELETE FROM cap_spend WHERE caller = OLD.caller AND key_id = OLD.key_id AND currency = OLD.currency;
END;
