-- Month partitions for the tables that grow without end, so that old months can be
-- detached and archived (ALTER TABLE ... DETACH PARTITION) without touching live data:
--   splits, split_accounts  by paid_at    (a result and its shares land in one month)
--   entries, outbox         by created_at (ledger and event time)
-- Each table also has a DEFAULT partition: a row outside the prepared months (a backfill
-- paid long ago, a clock far ahead) is still stored, never refused.
--
-- A partitioned table cannot hold a unique index without its partition key, so the
-- idempotency of Compute moves to split_keys: one narrow row per order id (the only
-- global uniqueness the service needs), pointing at the month of its result.

-- 1. The old tables step aside (their explicitly named indexes go: the new tables
--    reuse the names; PostgreSQL picks fresh names for the implicit ones).
DROP INDEX entries_account, entries_available, entries_order, outbox_unpublished;
ALTER TABLE splits RENAME TO splits_old;
ALTER TABLE split_accounts RENAME TO split_accounts_old;
ALTER TABLE entries RENAME TO entries_old;
ALTER TABLE outbox RENAME TO outbox_old;

-- 2. The new tables, and the months around now (before the copy, so that recent rows
--    land in their month, not in DEFAULT).
CREATE TABLE split_keys (
    order_id TEXT PRIMARY KEY,
    paid_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE splits (
    order_id         TEXT NOT NULL REFERENCES split_keys (order_id),
    fingerprint      TEXT NOT NULL,
    merchant         TEXT NOT NULL,
    buyer            TEXT NOT NULL,
    currency         TEXT NOT NULL,
    paid_at          TIMESTAMPTZ NOT NULL,
    ruleset_version  BIGINT NOT NULL,
    paid             BIGINT NOT NULL CHECK (paid >= 0),
    sales            BIGINT NOT NULL CHECK (sales >= 0),
    primary_promoter TEXT,
    month            TEXT NOT NULL,
    result           TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, paid_at)
) PARTITION BY RANGE (paid_at);

CREATE TABLE split_accounts (
    account         TEXT NOT NULL,
    paid_at         TIMESTAMPTZ NOT NULL,
    order_id        TEXT NOT NULL REFERENCES split_keys (order_id),
    currency        TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    ruleset_version BIGINT NOT NULL,
    PRIMARY KEY (account, paid_at, order_id)
) PARTITION BY RANGE (paid_at);

CREATE TABLE entries (
    id           BIGSERIAL,
    account      TEXT NOT NULL,
    currency     TEXT NOT NULL,
    amount       BIGINT NOT NULL,
    deferred     BOOLEAN NOT NULL,
    available_at TIMESTAMPTZ,
    source_kind  TEXT NOT NULL CHECK (source_kind IN ('split', 'refund', 'redemption')),
    source_id    TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    CHECK (deferred OR available_at IS NOT NULL),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE outbox (
    seq          BIGSERIAL,
    event_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ,
    PRIMARY KEY (seq, created_at),
    -- Event ids are unique within a month; every source of events is idempotent itself
    -- (split_keys, movements and payout_batches primary keys).
    UNIQUE (event_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE splits_default PARTITION OF splits DEFAULT;
CREATE TABLE split_accounts_default PARTITION OF split_accounts DEFAULT;
CREATE TABLE entries_default PARTITION OF entries DEFAULT;
CREATE TABLE outbox_default PARTITION OF outbox DEFAULT;

-- Month partitions: prorata_prepare_months(anchor, back, ahead) makes sure the months
--    from `back` months before `anchor` to `ahead` months after it exist for the four
--    tables (the server calls it at start and every hour). A month whose rows already
--    sit in a DEFAULT partition is left there (a NOTICE says so) rather than failing.
CREATE FUNCTION prorata_prepare_months(anchor TIMESTAMPTZ, months_back INT, months_ahead INT)
RETURNS INT AS $$
DECLARE
    t      TEXT;
    m      DATE;
    made   INT := 0;
    part   TEXT;
BEGIN
    FOR i IN -months_back..months_ahead LOOP
        m := (date_trunc('month', anchor AT TIME ZONE 'UTC') + make_interval(months => i))::date;
        FOREACH t IN ARRAY ARRAY['splits', 'split_accounts', 'entries', 'outbox'] LOOP
            part := format('%s_%s', t, to_char(m, 'YYYY_MM'));
            IF to_regclass(part) IS NULL THEN
                BEGIN
                    EXECUTE format(
                        'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                        part, t,
                        (m::timestamp AT TIME ZONE 'UTC'),
                        ((m + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
                    made := made + 1;
                EXCEPTION WHEN duplicate_table THEN
                    NULL; -- another replica made it first
                WHEN check_violation THEN
                    RAISE NOTICE 'month % of % stays in its DEFAULT partition (it has rows there)', m, t;
                END;
            END IF;
        END LOOP;
    END LOOP;
    RETURN made;
END;
$$ LANGUAGE plpgsql;

SELECT prorata_prepare_months(now(), 1, 2);

-- 3. Existing rows (keys first: the new foreign keys point at them).
INSERT INTO split_keys (order_id, paid_at) SELECT order_id, paid_at FROM splits_old;
INSERT INTO splits SELECT order_id, fingerprint, merchant, buyer, currency, paid_at,
    ruleset_version, paid, sales, primary_promoter, month, result, created_at FROM splits_old;
INSERT INTO split_accounts SELECT account, paid_at, order_id, currency, amount,
    ruleset_version FROM split_accounts_old;
INSERT INTO entries SELECT id, account, currency, amount, deferred, available_at,
    source_kind, source_id, order_id, created_at FROM entries_old;
INSERT INTO outbox SELECT seq, event_id, kind, key, body, created_at, published_at FROM outbox_old;
SELECT setval(pg_get_serial_sequence('entries', 'id'),
              GREATEST((SELECT MAX(id) FROM entries), 1), (SELECT MAX(id) FROM entries) IS NOT NULL);
SELECT setval(pg_get_serial_sequence('outbox', 'seq'),
              GREATEST((SELECT MAX(seq) FROM outbox), 1), (SELECT MAX(seq) FROM outbox) IS NOT NULL);

-- 4. Foreign keys that pointed at the old tables: movements now name the order's key;
--    a payout entry names its entry's month too, so it can still be a foreign key.
ALTER TABLE movements DROP CONSTRAINT movements_order_id_fkey;
ALTER TABLE movements ADD FOREIGN KEY (order_id) REFERENCES split_keys (order_id);
ALTER TABLE payout_entries ADD COLUMN entry_created_at TIMESTAMPTZ;
ALTER TABLE payout_entries DROP CONSTRAINT payout_entries_entry_id_fkey;

UPDATE payout_entries p SET entry_created_at = e.created_at FROM entries e WHERE e.id = p.entry_id;
DROP TABLE split_accounts_old;
DROP TABLE splits_old;
DROP TABLE entries_old;
DROP TABLE outbox_old;
ALTER TABLE payout_entries ALTER COLUMN entry_created_at SET NOT NULL;
ALTER TABLE payout_entries ADD FOREIGN KEY (entry_id, entry_created_at) REFERENCES entries (id, created_at);

-- 5. Indexes (created on every partition, present and future).
CREATE INDEX entries_account ON entries (account, currency, id);
CREATE INDEX entries_available ON entries (available_at) WHERE NOT deferred;
CREATE INDEX entries_order ON entries (order_id);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

-- 6. Immutability, as before (the trigger is cloned onto every partition).
CREATE TRIGGER split_keys_immutable BEFORE UPDATE OR DELETE ON split_keys
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
CREATE TRIGGER splits_immutable BEFORE UPDATE OR DELETE ON splits
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
CREATE TRIGGER split_accounts_immutable BEFORE UPDATE OR DELETE ON split_accounts
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
CREATE TRIGGER entries_immutable BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();

