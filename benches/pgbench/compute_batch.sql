-- The database ceiling of durable Compute on PostgreSQL with group commit (benches/run.sh):
-- one pgbench transaction is one batch of :batch orders, with the statements the server
-- issues for a batch and nothing else around them.
--
-- MIRRORS src/store/postgres.rs, statement for statement:
--   deferred=1 (store_batch): one statement outside any explicit transaction, the call of
--              prorata_store_batch (migrations/postgres/0006_store_batch.sql) with the
--              batch's rows as arrays. The function takes the order locks and claims the
--              keys, writes the rows (results with their JSON from bench_payloads, one share
--              and one ledger entry per account per order, one split_computed event per
--              order), adds the batch's sums to its counter rows (sorted) and claims its
--              buyers; PostgreSQL commits the call. This is how the server stores a batch
--              whose rule sets read no order history (no month ladder, first_order
--              condition or grades: RuleSet::reads_order_history), such as the rule set
--              `prorata bench --setup` publishes. The arrays are built here from
--              bench_batch() in the same statement; the server sends them as parameters.
--   deferred=0 (commit_bulk + write_new, a rule set that reads order history):
--     BEGIN
--     claim      one statement: pg_advisory_xact_lock of every order id, sorted, and every
--                id's split_keys row inserted (ON CONFLICT DO NOTHING RETURNING); the
--                server reads stored splits only for ids it could not claim, which these
--                new orders never are
--     counters   every counter row of the batch made to exist and locked (sorted)
--     buyers     the batch's buyers claimed (ON CONFLICT DO NOTHING RETURNING)
--     write      one statement, a data-modifying CTE per table: splits, split_accounts,
--                entries, outbox (the server also writes the counters' final values in it;
--                here they are added in a statement of their own, on rows locked above)
--     COMMIT
-- Compute issues no other statement for a new order (the result cache answers replays;
-- the network comes from the process cache). Not mirrored: the engine (server CPU).
--
-- Variables given with pgbench -D: run (unique per run), batch (orders per transaction:
-- the mean batch the server formed in the same run), payloads (rows of bench_payloads),
-- live (1: orders paid about in sequence, `prorata bench --paid-at live`; 0: at random
-- seconds of the month, `--paid-at month`), clients (pgbench -c), seq (0: this client's
-- transactions so far; pgbench keeps a client's variables from one transaction to the
-- next, so order_seq below numbers every client's batches apart).
-- bench_batch() is made by benches/pgbench/batch_setup.sql.
-- In -M prepared mode pgbench turns every `:name` into a parameter, even inside a
-- string literal, so no literal here has a colon followed by a letter.

\set base random(1, 1000000000000)
\set seq :seq + 1
\set order_seq :seq * :clients + :client_id

\if :deferred
-- The one call (store_batch). Arrays in the order of the function's parameters.
WITH b AS MATERIALIZED (SELECT * FROM bench_batch(:run, :base, :batch, :payloads, :live, :order_seq)),
     r AS MATERIALIZED (SELECT b.*, p.body FROM b JOIN bench_payloads p ON p.id = b.payload),
     accounts AS MATERIALIZED (
       SELECT b.i, b.order_id, b.paid_at, a, n FROM b,
              LATERAL UNNEST(
                ARRAY['merchant:' || b.merchant, 'platform', 'partner:' || 'bench-partner', 'channel:' || 'alipay']
                  || ARRAY(SELECT 'promoter:' || 'bench-p-' || lpad(b.chain::text, 3, '0') || '-' || d
                           FROM generate_series(1, b.levels) AS d)) WITH ORDINALITY AS x(a, n)),
     v AS MATERIALIZED (
       SELECT k, s, sum(sales)::bigint AS d FROM (
         SELECT 'merchant' AS k, merchant AS s, sales FROM b
         UNION ALL
         SELECT 'promoter', promoter, sales FROM b) AS u
       GROUP BY k, s),
     buy AS MATERIALIZED (SELECT DISTINCT ON (buyer) buyer, order_id FROM b ORDER BY buyer, i)
SELECT prorata_store_batch(
  (SELECT array_agg(order_id ORDER BY i) FROM r),
  (SELECT array_agg(paid_at ORDER BY i) FROM r),
  (SELECT array_agg(md5(order_id) || md5(buyer) ORDER BY i) FROM r),
  (SELECT array_agg(merchant ORDER BY i) FROM r),
  (SELECT array_agg(buyer ORDER BY i) FROM r),
  (SELECT array_agg('CNY'::text ORDER BY i) FROM r),
  (SELECT array_agg(1::bigint ORDER BY i) FROM r),
  (SELECT array_agg(sales ORDER BY i) FROM r),
  (SELECT array_agg(sales ORDER BY i) FROM r),
  (SELECT array_agg(promoter ORDER BY i) FROM r),
  (SELECT array_agg('2026-11'::text ORDER BY i) FROM r),
  (SELECT array_agg(body ORDER BY i) FROM r),
  (SELECT array_agg(now() ORDER BY i) FROM r),
  (SELECT array_agg(a ORDER BY i, n) FROM accounts),
  (SELECT array_agg(paid_at ORDER BY i, n) FROM accounts),
  (SELECT array_agg(order_id ORDER BY i, n) FROM accounts),
  (SELECT array_agg('CNY'::text ORDER BY i, n) FROM accounts),
  (SELECT array_agg(100::bigint ORDER BY i, n) FROM accounts),
  (SELECT array_agg(1::bigint ORDER BY i, n) FROM accounts),
  (SELECT array_agg(a ORDER BY i, n) FROM accounts),
  (SELECT array_agg('CNY'::text ORDER BY i, n) FROM accounts),
  (SELECT array_agg(100::bigint ORDER BY i, n) FROM accounts),
  (SELECT array_agg(false ORDER BY i, n) FROM accounts),
  (SELECT array_agg(paid_at + interval '7 days' ORDER BY i, n) FROM accounts),
  (SELECT array_agg(order_id ORDER BY i, n) FROM accounts),
  (SELECT array_agg(now() ORDER BY i, n) FROM accounts),
  (SELECT array_agg(k ORDER BY k, s) FROM v),
  (SELECT array_agg(s ORDER BY k, s) FROM v),
  (SELECT array_agg('CNY'::text ORDER BY k, s) FROM v),
  (SELECT array_agg('2026-11'::text ORDER BY k, s) FROM v),
  (SELECT array_agg(d ORDER BY k, s) FROM v),
  (SELECT array_agg(buyer ORDER BY buyer) FROM buy),
  (SELECT array_agg(order_id ORDER BY buyer) FROM buy),
  (SELECT array_agg(order_id ORDER BY order_id) FROM b),
  (SELECT array_agg(paid_at ORDER BY order_id) FROM b));
\else
BEGIN;

-- The order locks (sorted ids) and the keys claimed, in one statement: commit_bulk reads
-- stored results only for ids whose key was taken, which these new orders never are.
WITH b AS (SELECT order_id, paid_at FROM bench_batch(:run, :base, :batch, :payloads, :live, :order_seq)),
     locks AS (SELECT pg_advisory_xact_lock(hashtextextended(o, 0)) FROM (SELECT order_id AS o FROM b ORDER BY 1) AS s)
INSERT INTO split_keys (order_id, paid_at)
  SELECT order_id, paid_at FROM b WHERE (SELECT count(*) FROM locks) >= 0 ORDER BY order_id
  ON CONFLICT (order_id) DO NOTHING RETURNING order_id;

INSERT INTO volumes (kind, subject, currency, month, amount)
  SELECT k, s, 'CNY', '2026-11', 0 FROM (
    SELECT DISTINCT k, s FROM (
      SELECT 'merchant' AS k, merchant AS s FROM bench_batch(:run, :base, :batch, :payloads, :live, :order_seq)
      UNION ALL
      SELECT 'promoter', promoter FROM bench_batch(:run, :base, :batch, :payloads, :live, :order_seq)) AS u) AS d
  ORDER BY k, s
  ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = volumes.amount
  RETURNING kind, subject, currency, month, amount;

INSERT INTO buyers (buyer, first_order_id)
  SELECT DISTINCT ON (buyer) buyer, order_id FROM bench_batch(:run, :base, :batch, :payloads, :live, :order_seq)
  ORDER BY buyer, i
  ON CONFLICT (buyer) DO NOTHING RETURNING buyer;

-- The rows, one statement with a data-modifying CTE per table (write_new).
WITH b AS MATERIALIZED (SELECT * FROM bench_batch(:run, :base, :batch, :payloads, :live, :order_seq)),
     accounts AS MATERIALIZED (
       SELECT b.order_id, b.paid_at, a FROM b,
              LATERAL UNNEST(
                ARRAY['merchant:' || b.merchant, 'platform', 'partner:' || 'bench-partner', 'channel:' || 'alipay']
                  || ARRAY(SELECT 'promoter:' || 'bench-p-' || lpad(b.chain::text, 3, '0') || '-' || d
                           FROM generate_series(1, b.levels) AS d)) AS a),
     results AS (
       INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at, ruleset_version, paid,
                           sales, primary_promoter, month, result, created_at)
       SELECT b.order_id, md5(b.order_id) || md5(b.buyer), b.merchant, b.buyer, 'CNY', b.paid_at, 1,
              b.sales, b.sales, b.promoter, '2026-11', p.body, now()
       FROM b JOIN bench_payloads p ON p.id = b.payload),
     shares AS (
       INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version)
       SELECT a, paid_at, order_id, 'CNY', 100, 1 FROM accounts),
     ledger AS (
       INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at)
       SELECT a, 'CNY', 100, false, paid_at + interval '7 days', 'split', order_id, order_id, now() FROM accounts)
INSERT INTO outbox (event_id, kind, key, body, created_at)
  SELECT 'split_computed:' || b.order_id, 'split_computed', b.order_id, '', now()
  FROM b ORDER BY b.i
  ON CONFLICT DO NOTHING;

-- The counters: the server writes their final values inside its write statement; here
-- the batch's sums are added in a statement of their own, on the rows locked above.
INSERT INTO volumes (kind, subject, currency, month, amount)
  SELECT k, s, 'CNY', '2026-11', delta FROM (
    SELECT k, s, sum(sales) AS delta FROM (
      SELECT 'merchant' AS k, merchant AS s, sales FROM bench_batch(:run, :base, :batch, :payloads, :live, :order_seq)
      UNION ALL
      SELECT 'promoter', promoter, sales FROM bench_batch(:run, :base, :batch, :payloads, :live, :order_seq)) AS u
    GROUP BY k, s) AS d
  ORDER BY k, s
  ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = volumes.amount + EXCLUDED.amount;

COMMIT;
\endif
