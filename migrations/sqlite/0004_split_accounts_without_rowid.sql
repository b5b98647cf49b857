-- split_accounts is read only through its primary key (ListSplits: an account's splits by
-- paid_at), so it is kept as that key's B-tree alone (WITHOUT ROWID): each share is one
-- B-tree insert instead of two (the rowid table and the key's index), and each row is
-- stored once instead of twice.
CREATE TABLE split_accounts_by_key (
    account         TEXT NOT NULL,
    paid_at         INTEGER NOT NULL,
    order_id        TEXT NOT NULL REFERENCES splits (order_id),
    currency        TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount >= 0),
    ruleset_version INTEGER NOT NULL,
    PRIMARY KEY (account, paid_at, order_id)
) WITHOUT ROWID;
INSERT INTO split_accounts_by_key (account, paid_at, order_id, currency, amount, ruleset_version)
    SELECT account, paid_at, order_id, currency, amount, ruleset_version FROM split_accounts;
DROP TRIGGER split_accounts_no_update;
DROP TRIGGER split_accounts_no_delete;
DROP TABLE split_accounts;
ALTER TABLE split_accounts_by_key RENAME TO split_accounts;
CREATE TRIGGER split_accounts_no_update BEFORE UPDATE ON split_accounts BEGIN SELECT RAISE(ABORT, 'split_accounts is immutable'); END;
CREATE TRIGGER split_accounts_no_delete BEFORE DELETE ON split_accounts BEGIN SELECT RAISE(ABORT, 'split_accounts is immutable'); END;
