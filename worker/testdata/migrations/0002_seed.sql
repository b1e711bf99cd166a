INSERT INTO entries(account, kind, amount) VALUES ('a; b', 'credit', 500), ('a; b', 'debit', 120);
