-- A batch of new orders in one statement, one round trip (store::postgres::store_batch).
--
-- A group-commit batch whose rule sets read no order history (no month ladder, no
-- first_order condition, no grades: RuleSet::reads_order_history) is computed before it
-- reaches the database, so everything it writes is known up front. The server sends it
-- as one call of this function outside any explicit transaction: PostgreSQL runs the
-- call and commits it, and the batch costs one round trip instead of seven (pool check,
-- BEGIN, claim, rows, counters, buyers, COMMIT). The statements are those of the
-- multi-statement path (commit_bulk with deferred counters), in its order and lock order:
--   1. every order lock (sorted ids) and every id's key claimed;
--      if any key is taken, the call fails with SQLSTATE PR001 and stores nothing: the
--      server then takes the multi-statement path, which reads the stored results;
--   2. the rows: results, shares, ledger entries, split_computed events (batch order);
--   3. the batch's sums added to its counter rows (sorted: the global lock order), last,
--      so that the rows every concurrent batch shares are held only until the commit;
--   4. the buyers claimed (sorted), as the multi-statement path claims them.
-- An error anywhere (a counter past bigint, a constraint) fails the whole call: nothing
-- is stored, and the server stores the batch the other way, one order per savepoint if
-- it must.
CREATE FUNCTION prorata_store_batch(
    -- splits: one per new order, in batch order (the binds of write_new, $1..$13)
    s_id TEXT[], s_paid_at TIMESTAMPTZ[], s_fingerprint TEXT[], s_merchant TEXT[], s_buyer TEXT[],
    s_currency TEXT[], s_version BIGINT[], s_paid BIGINT[], s_sales BIGINT[], s_primary TEXT[],
    s_month TEXT[], s_result TEXT[], s_created TIMESTAMPTZ[],
    -- split_accounts: one per account per order ($14..$19)
    a_account TEXT[], a_paid_at TIMESTAMPTZ[], a_id TEXT[], a_currency TEXT[], a_amount BIGINT[],
    a_version BIGINT[],
    -- entries: the ledger ($20..$26)
    e_account TEXT[], e_currency TEXT[], e_amount BIGINT[], e_deferred BOOLEAN[],
    e_available TIMESTAMPTZ[], e_id TEXT[], e_created TIMESTAMPTZ[],
    -- volumes: the batch's sum per counter row, sorted
    v_kind TEXT[], v_subject TEXT[], v_currency TEXT[], v_month TEXT[], v_sum BIGINT[],
    -- buyers: (buyer, its first order in the batch), sorted by buyer
    b_buyer TEXT[], b_id TEXT[],
    -- the batch's distinct ids, sorted, with the paid_at of each (the order locks, the keys)
    k_id TEXT[], k_paid_at TIMESTAMPTZ[])
RETURNS VOID AS $$
DECLARE
    claimed BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(o, 0))
    FROM UNNEST(k_id) WITH ORDINALITY AS x(o, n) ORDER BY n;
    INSERT INTO split_keys (order_id, paid_at)
    SELECT o, t FROM UNNEST(k_id, k_paid_at) WITH ORDINALITY AS x(o, t, n) ORDER BY n
    ON CONFLICT (order_id) DO NOTHING;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed < cardinality(k_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = 'prorata: an order of the batch is stored or being stored';
    END IF;

    WITH results AS (
        INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at,
                            ruleset_version, paid, sales, primary_promoter, month, result,
                            created_at)
        SELECT * FROM UNNEST(s_id, s_fingerprint, s_merchant, s_buyer, s_currency, s_paid_at,
                             s_version, s_paid, s_sales, s_primary, s_month, s_result, s_created)),
    shares AS (
        INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version)
        SELECT * FROM UNNEST(a_account, a_paid_at, a_id, a_currency, a_amount, a_version)),
    ledger AS (
        INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind,
                             source_id, order_id, created_at)
        SELECT a, c, m, d, t, 'split', o, o, w
        FROM UNNEST(e_account, e_currency, e_amount, e_deferred, e_available, e_id, e_created)
             WITH ORDINALITY AS x(a, c, m, d, t, o, w, n)
        ORDER BY n)
    -- In batch order: the relay publishes in outbox order. The body is the result stored
    -- above, read from splits (SPLIT_COMPUTED).
    INSERT INTO outbox (event_id, kind, key, body, created_at)
    SELECT 'split_computed:' || o, 'split_computed', o, '', w
    FROM UNNEST(s_id, s_created) WITH ORDINALITY AS x(o, w, n)
    ORDER BY n
    ON CONFLICT DO NOTHING;

    INSERT INTO volumes (kind, subject, currency, month, amount)
    SELECT k, s, c, m, d FROM UNNEST(v_kind, v_subject, v_currency, v_month, v_sum)
         WITH ORDINALITY AS x(k, s, c, m, d, n) ORDER BY n
    ON CONFLICT (kind, subject, currency, month)
        DO UPDATE SET amount = volumes.amount + EXCLUDED.amount;

    INSERT INTO buyers (buyer, first_order_id)
    SELECT b, o FROM UNNEST(b_buyer, b_id) WITH ORDINALITY AS x(b, o, n) ORDER BY n
    ON CONFLICT (buyer) DO NOTHING;
END
$$ LANGUAGE plpgsql;
