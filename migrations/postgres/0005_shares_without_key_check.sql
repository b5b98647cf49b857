-- A share row (split_accounts) no longer checks its own foreign key to split_keys.
--
-- Every share is written by the statement that writes its order's result row (the
-- `shares` and `results` CTEs of store::postgres::write_new, from one plan), and that
-- row keeps its foreign key: no result is stored without its order's key, and no share
-- without its result. The per-share check was a trigger query and a key-row lock for each
-- share, about seven per order; with pgbench running the server's own batch statements,
-- PostgreSQL stored 11.5 % more orders per second without it (benches/RESULTS.md §27).
-- SQLite keeps its share -> split key: there it is one in-process B-tree probe.
DO $$
DECLARE
    c TEXT;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'split_accounts'::regclass AND contype = 'f'
               AND confrelid = 'split_keys'::regclass
    LOOP
        EXECUTE format('ALTER TABLE split_accounts DROP CONSTRAINT %I', c);
    END LOOP;
END $$;
