-- Test migration for the E2E harness: a trigger body with `;` and a CASE ... END inside BEGIN ... END,
-- which naive splitting on ';' breaks.
CREATE TABLE accounts(id TEXT PRIMARY KEY, balance INTEGER NOT NULL DEFAULT 0);
CREATE TABLE entries(id INTEGER PRIMARY KEY, account TEXT NOT NULL, kind TEXT NOT NULL, amount INTEGER NOT NULL);
CREATE TRIGGER entries_apply AFTER INSERT ON entries
BEGIN
  UPDATE accounts SET balance = balance + CASE NEW.kind WHEN 'credit' THEN NEW.amount ELSE -NEW.amount END
  WHERE id = NEW.account;
  SELECT RAISE(ABORT, 'overdrawn') FROM accounts WHERE id = NEW.account AND balance < 0;
END;
/* a block comment; with a semicolon */
INSERT INTO accounts(id) VALUES ('a; b');
