-- A stored result (splits.result, its JSON: about 3.2 KB for a 2-line order with two
-- promoter levels) is compressed with lz4 instead of PostgreSQL's default pglz.
--
-- Every result is past the 2 KB at which PostgreSQL compresses a row's long values, so
-- every Compute compressed one. pglz_compress was the largest single item of PostgreSQL's
-- CPU profile under durable Compute (12 % of the database's samples); with lz4 a result
-- takes 1,273 bytes instead of 1,070, and PostgreSQL stored 8 % more orders per second
-- (benches/RESULTS.md §28). Results stay readable JSON text in SQL.
--
-- The method is set on the partitioned table, which the month partitions made later by
-- prorata_prepare_months inherit, and on every partition that exists already (a
-- partition keeps the method it was made with). Rows stored before keep pglz: PostgreSQL
-- reads either. A server built without lz4 keeps pglz (a NOTICE says so).
DO $$
DECLARE
    t REGCLASS;
BEGIN
    IF current_setting('server_version_num')::INT < 140000 THEN
        RAISE NOTICE 'PostgreSQL before 14 has one compression method: results keep pglz';
        RETURN;
    END IF;
    BEGIN
        EXECUTE 'ALTER TABLE splits ALTER COLUMN result SET COMPRESSION lz4';
        FOR t IN SELECT inhrelid::REGCLASS FROM pg_inherits WHERE inhparent = 'splits'::REGCLASS LOOP
            EXECUTE format('ALTER TABLE %s ALTER COLUMN result SET COMPRESSION lz4', t);
        END LOOP;
    EXCEPTION WHEN feature_not_supported THEN
        RAISE NOTICE 'this PostgreSQL is built without lz4: results keep pglz';
    END;
END $$;
