-- The ledger's entries carry two index entries fewer per row.
--
-- Every Compute writes a ledger entry per account it pays (about seven for a 2-line order
-- with two promoter levels), and each entry was four B-tree insertions: the primary key
-- (id, created_at), entries_account (account, currency, id), entries_available and
-- entries_order. With pgbench running the server's own batch call, each of the four cost
-- PostgreSQL about 4-5 % of its orders per second (benches/RESULTS.md §29).
--
-- 1. The primary key becomes (account, currency, id, created_at) and takes the place of
--    entries_account: the same order (an id is unique, so the trailing month changes no
--    ordering), the same account pages for ListEntries and balances, one index instead
--    of two. A payout entry names its entry by that key, so it gains the entry's currency
--    (filled from the entry) and its foreign key follows.
-- 2. entries_available becomes a BRIN index: payouts select the entries available by a
--    date, and an entry's available_at follows the time it was written (payment time plus
--    a hold), which is what BRIN summarises, at a cost per insert near nothing. A B-tree
--    over it was an insertion per entry for a query that reads most of a month anyway.
-- entries_order stays: it is how one order's entries are found (GetOrder, refunds' state).
ALTER TABLE payout_entries ADD COLUMN currency TEXT;
-- Filling the new column is the only update a payout entry ever takes (this migration
-- runs in one transaction: the trigger is off for this statement only).
ALTER TABLE payout_entries DISABLE TRIGGER payout_entries_immutable;
UPDATE payout_entries p SET currency = e.currency FROM entries e
 WHERE e.id = p.entry_id AND e.created_at = p.entry_created_at;
ALTER TABLE payout_entries ENABLE TRIGGER payout_entries_immutable;
ALTER TABLE payout_entries ALTER COLUMN currency SET NOT NULL;

DO $$
DECLARE
    c TEXT;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'payout_entries'::regclass AND contype = 'f'
               AND confrelid = 'entries'::regclass
    LOOP
        EXECUTE format('ALTER TABLE payout_entries DROP CONSTRAINT %I', c);
    END LOOP;
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'entries'::regclass AND contype = 'p'
    LOOP
        EXECUTE format('ALTER TABLE entries DROP CONSTRAINT %I', c);
    END LOOP;
END $$;
DROP INDEX entries_account;
ALTER TABLE entries ADD PRIMARY KEY (account, currency, id, created_at);
ALTER TABLE payout_entries ADD FOREIGN KEY (account, currency, entry_id, entry_created_at)
    REFERENCES entries (account, currency, id, created_at);

DROP INDEX entries_available;
CREATE INDEX entries_available ON entries USING brin (available_at);
