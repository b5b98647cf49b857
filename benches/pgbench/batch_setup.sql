-- Set-up of benches/pgbench/compute_batch.sql (run once by benches/run.sh after
-- bench_payloads is filled): the orders of one group-commit batch, generated in SQL from
-- (run, base, n) so that every statement of a pgbench transaction names the same orders.
-- The mix follows src/loadgen.rs with `--setup` (the classic network): 50 merchants,
-- 200 chains of 5 promoters with 5 customers each, a buyer bound at depth 1-5 paying as
-- many levels, so 4 + levels accounts; paid during November 2026, as `prorata bench
-- --paid-at` pays them: live = 1 pays order `seq` (the client's transactions counted
-- across clients, times the batch, plus its place in it) 10 ms after the one before it,
-- less up to 5 s of jitter, from November 1 + 5 s; live = 0 at a random second of the
-- month.
CREATE FUNCTION bench_batch(run BIGINT, base BIGINT, n INT, payloads INT, live INT, seq BIGINT)
RETURNS TABLE (i INT, order_id TEXT, merchant TEXT, promoter TEXT, buyer TEXT, levels INT,
               chain INT, sales BIGINT, paid_at TIMESTAMPTZ, payload INT)
LANGUAGE sql STABLE AS $$
    SELECT g,
           'pgb-' || run || '-' || base || '-' || g,
           'bench-m-' || lpad((h % 50)::text, 2, '0'),
           'bench-p-' || lpad((h / 50 % 200)::text, 3, '0') || '-' || (1 + h / 10000 % 5),
           'bench-c-' || lpad((h / 50 % 200)::text, 3, '0') || '-' || (1 + h / 10000 % 5)
               || '-' || (h / 50000 % 5),
           (1 + h / 10000 % 5)::int,
           (h / 50 % 200)::int,
           500 + h / 250000 % 299500,
           timestamptz '2026-11-01 00:00:00+00' + CASE WHEN live = 1
               THEN make_interval(secs => (5000 + (seq * n + g) * 10 - h / 3 % 5000) / 1000.0)
               ELSE make_interval(secs => (h / 3 % 2505599)::int) END,
           (1 + h / 7 % payloads)::int
    FROM generate_series(1, n) AS g,
         LATERAL (SELECT abs(hashint8(base * 1000 + g)::bigint) AS h) AS x
$$;
