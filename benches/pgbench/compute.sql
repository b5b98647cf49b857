-- The database ceiling of a durable Compute on PostgreSQL (benches/run.sh): the statements
-- one Compute issues, run by pgbench with nothing else around them.
--
-- MIRRORS src/store/postgres.rs `commit_one` (through `PgStore::commit_split`, group
-- commit off) and the `Store::get_split` that `App::compute_inner` (src/app.rs) runs
-- before it. The lead is changing commit_one (month partitioning, group commit): when it
-- changes, change this file with it, statement for statement. Two schemas are in use on
-- 2026-11-22, chosen with -D partitioned=1|0 (run.sh looks for the split_keys table):
--   1: the working tree: split_keys + month-partitioned splits, split_accounts, entries
--      and outbox (migrations/postgres/0004_month_partitions.sql); SPLIT_BY_ORDER joins
--      split_keys to splits, and commit_one inserts the split_keys row first
--   0: as committed at cf40133: `SELECT fingerprint, result FROM splits WHERE order_id`,
--      no split_keys row (the outbox insert there names its conflict target, event_id;
--      same effect)
--
--   get_split             SPLIT_BY_ORDER, outside the transaction (a stored split is a replay)
--   BEGIN
--   order_lock            pg_advisory_xact_lock(hashtextextended(order_id, 0))
--   SPLIT_BY_ORDER        again, under the lock
--   add_volume            merchant counter, then the primary promoter's (fixed order)
--   buyers                first order of the buyer (ON CONFLICT DO NOTHING)
--   split_keys, splits    the result (its JSON: see bench_payloads below)
--   split_accounts        one row per account, one UNNEST insert
--   insert_entries        one ledger entry per account, one UNNEST insert
--   outbox_insert         the split_computed event (empty body: the relay reads splits.result)
--   check_grade           nothing: the benchmark rule set has no grades
--   COMMIT
--
-- Not mirrored: the network reads (served from the process cache once warm) and the
-- engine itself (CPU in the server, not database work).
--
-- The mix follows src/loadgen.rs with `--setup` (the classic network): 50 merchants,
-- 200 chains of 5 promoters with 5 customers each, a buyer bound at depth 1-5 paying as
-- many levels, so 4 + levels accounts (merchant, platform, partner, channel, promoters);
-- paid during November 2026 (live = 1: about in sequence, 10 ms apart less up to 5 s, as
-- `prorata bench --paid-at live`; live = 0: at random seconds, `--paid-at month`); entries
-- available 7 days later (hold_days).
--
-- Variables given with pgbench -D:
--   partitioned  1 or 0, see above
--   live, clients, seq  the paid_at model above; clients = pgbench -c, seq = 0 (pgbench
--             keeps a client's variables between transactions: its count so far)
--   run       a number unique to this run: order ids never collide with earlier runs
--   payloads  rows of bench_payloads: result JSON bodies copied by run.sh from the
--             prorata Compute run of the same session, so the stored text has the real
--             size and compressibility (one primary-key read of a cached table per use)
-- Run with -M prepared (sqlx prepares every statement too). In that mode pgbench turns
-- every `:name` into a parameter, even inside a string literal, so no literal here has a
-- colon followed by a letter ('merchant:' || 'bench-m-', not 'merchant:bench-m-').

\set merchant random(0, 49)
\set chain random(0, 199)
\set levels random(1, 5)
\set j random(0, 4)
\set seq :seq + 1
\if :live
\set paid_ms 5000 + (:seq * :clients + :client_id) * 10 - random(0, 4999)
\else
\set paid_ms random(0, 2505599) * 1000
\endif
\set oid random(1, 1000000000000000)
\set sales random(500, 300000)
\set payload random(1, :payloads)

\if :partitioned
SELECT s.fingerprint, s.result FROM split_keys k
  JOIN splits s ON s.order_id = k.order_id AND s.paid_at = k.paid_at
  WHERE k.order_id = 'pgb-' || :run::text || '-' || :oid::text;
\else
SELECT fingerprint, result FROM splits WHERE order_id = 'pgb-' || :run::text || '-' || :oid::text;
\endif

BEGIN;

SELECT pg_advisory_xact_lock(hashtextextended('pgb-' || :run::text || '-' || :oid::text, 0));

\if :partitioned
SELECT s.fingerprint, s.result FROM split_keys k
  JOIN splits s ON s.order_id = k.order_id AND s.paid_at = k.paid_at
  WHERE k.order_id = 'pgb-' || :run::text || '-' || :oid::text;
\else
SELECT fingerprint, result FROM splits WHERE order_id = 'pgb-' || :run::text || '-' || :oid::text;
\endif

INSERT INTO volumes (kind, subject, currency, month, amount)
  VALUES ('merchant', 'bench-m-' || lpad(:merchant::text, 2, '0'), 'CNY', '2026-11', :sales::bigint)
  ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = volumes.amount + EXCLUDED.amount
  RETURNING amount;

INSERT INTO volumes (kind, subject, currency, month, amount)
  VALUES ('promoter', 'bench-p-' || lpad(:chain::text, 3, '0') || '-' || :levels::text, 'CNY', '2026-11', :sales::bigint)
  ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = volumes.amount + EXCLUDED.amount
  RETURNING amount;

INSERT INTO buyers (buyer, first_order_id)
  VALUES ('bench-c-' || lpad(:chain::text, 3, '0') || '-' || :levels::text || '-' || :j::text,
          'pgb-' || :run::text || '-' || :oid::text)
  ON CONFLICT (buyer) DO NOTHING;

\if :partitioned
INSERT INTO split_keys (order_id, paid_at)
  VALUES ('pgb-' || :run::text || '-' || :oid::text,
          timestamptz '2026-11-01 00:00:00+00' + make_interval(secs => :paid_ms::float8 / 1000));
\endif

INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at, ruleset_version, paid,
                    sales, primary_promoter, month, result, created_at)
  VALUES ('pgb-' || :run::text || '-' || :oid::text,
          md5(:oid::text) || md5(:run::text),
          'bench-m-' || lpad(:merchant::text, 2, '0'),
          'bench-c-' || lpad(:chain::text, 3, '0') || '-' || :levels::text || '-' || :j::text,
          'CNY',
          timestamptz '2026-11-01 00:00:00+00' + make_interval(secs => :paid_ms::float8 / 1000),
          1, :sales::bigint, :sales::bigint,
          'bench-p-' || lpad(:chain::text, 3, '0') || '-' || :levels::text,
          '2026-11',
          (SELECT body FROM bench_payloads WHERE id = :payload::int),
          now());

INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version)
  SELECT a, timestamptz '2026-11-01 00:00:00+00' + make_interval(secs => :paid_ms::float8 / 1000),
         'pgb-' || :run::text || '-' || :oid::text, 'CNY', m, 1
  FROM UNNEST(
         ARRAY['merchant:' || 'bench-m-' || lpad(:merchant::text, 2, '0'), 'platform', 'partner:' || 'bench-partner', 'channel:' || 'alipay']
           || ARRAY(SELECT 'promoter:' || 'bench-p-' || lpad(:chain::text, 3, '0') || '-' || d
                    FROM generate_series(1, :levels::int) AS d),
         array_fill(100::bigint, ARRAY[4 + :levels::int])) AS t(a, m);

INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at)
  SELECT a, c, m, d, t, 'split', 'pgb-' || :run::text || '-' || :oid::text,
         'pgb-' || :run::text || '-' || :oid::text, now()
  FROM UNNEST(
         ARRAY['merchant:' || 'bench-m-' || lpad(:merchant::text, 2, '0'), 'platform', 'partner:' || 'bench-partner', 'channel:' || 'alipay']
           || ARRAY(SELECT 'promoter:' || 'bench-p-' || lpad(:chain::text, 3, '0') || '-' || d
                    FROM generate_series(1, :levels::int) AS d),
         array_fill('CNY'::text, ARRAY[4 + :levels::int]),
         array_fill(100::bigint, ARRAY[4 + :levels::int]),
         array_fill(false, ARRAY[4 + :levels::int]),
         array_fill(timestamptz '2026-11-08 00:00:00+00' + make_interval(secs => :paid_ms::float8 / 1000),
                    ARRAY[4 + :levels::int])) AS x(a, c, m, d, t);

INSERT INTO outbox (event_id, kind, key, body, created_at)
  VALUES ('split_computed:' || 'pgb-' || :run::text || '-' || :oid::text, 'split_computed',
          'pgb-' || :run::text || '-' || :oid::text, '', now())
  ON CONFLICT DO NOTHING;

COMMIT;
