# The SQLite ceiling of durable Compute, the counterpart of benches/pgbench: the rows a
# batch of new 2-line orders writes (store::sqlite_bulk: stored-id lookups, counter reads,
# buyer claims, then splits, 7 split_accounts, 7 entries, an outbox row per order and the
# final counters), through Python's sqlite3 on one thread, on a fresh database migrated
# with migrations/sqlite, WAL and synchronous = FULL as the server runs it. No engine, no
# gRPC: what SQLite itself stores per second on this disk.
#   python3 benches/sqlite/ceiling.py DB_PATH BATCH SECONDS   (NO_ENTRIES=1: skip entries;
#   PAGE_SIZE=n: another page size; FRAMES=1: then count one batch's WAL frames per table)
import sqlite3, sys, time, glob, os, random, json
db = sys.argv[1]; batch = int(sys.argv[2]); secs = float(sys.argv[3])
skip_entries = os.environ.get("NO_ENTRIES") == "1"
for f in glob.glob(db + "*"): os.remove(f)
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA page_size=%d" % int(os.environ.get("PAGE_SIZE", "4096"))); c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=FULL")
c.execute("PRAGMA cache_size=-65536"); c.execute("PRAGMA temp_store=MEMORY")
c.execute("PRAGMA wal_autocheckpoint=4096"); c.execute("PRAGMA foreign_keys=ON")
for m in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../migrations/sqlite/*.sql"))):
    c.executescript(open(m).read())
result = json.dumps({"x": "y" * 3150})
n = 0; t0 = time.time(); end = t0 + secs; commits = 0
def one_batch(n):
    c.execute("BEGIN IMMEDIATE")
    ids = ["o%d" % (n + i) for i in range(batch)]
    c.execute("SELECT order_id, fingerprint, result FROM splits WHERE order_id IN (%s)" % ",".join("?"*batch), ids).fetchall()
    keys = []
    for i in range(batch):
        keys += [("merchant", "m%d" % (i % 10), "CNY", "2026-12"), ("promoter", "p%d" % random.randrange(1000), "CNY", "2026-12")]
    c.execute("SELECT kind, subject, currency, month, amount FROM volumes WHERE (kind, subject, currency, month) IN (VALUES %s)" % ",".join(["(?,?,?,?)"]*len(keys)), [x for k in keys for x in k]).fetchall()
    c.execute("INSERT INTO buyers (buyer, first_order_id) VALUES %s ON CONFLICT (buyer) DO NOTHING RETURNING buyer" % ",".join(["(?,?)"]*batch), [x for i in ids for x in ("b"+i, i)]).fetchall()
    now = int(time.time()*1e6)
    c.execute("INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at, ruleset_version, paid, sales, primary_promoter, month, result, created_at) VALUES %s" % ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?)"]*batch),
              [x for i in ids for x in (i, "f"*64, "m1", "b"+i, "CNY", now, 1, 10000, 10000, "p1", "2026-12", result, now)])
    # Each order pays the channel, the platform, a partner, its merchant (one of 10) and
    # three promoters of a network of 1,000, as the server's bench does: every promoter
    # account is the tail page of its own range in split_accounts and entries_account.
    accts = {i: ["fee:wx", "platform", "partner:p1", "merchant:m%d" % random.randrange(10)]
             + ["promoter:p%d" % p for p in random.sample(range(1000), 3)] for i in ids}
    rows = [(a, now, i, "CNY", 100, 1) for i in ids for a in accts[i]]
    c.execute("INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version) VALUES %s" % ",".join(["(?,?,?,?,?,?)"]*len(rows)), [x for r in rows for x in r])
    if not skip_entries:
        rows = [(a, "CNY", 100, 0, now, "split", i, i, now) for i in ids for a in accts[i]]
        c.execute("INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at) VALUES %s" % ",".join(["(?,?,?,?,?,?,?,?,?)"]*len(rows)), [x for r in rows for x in r])
    c.execute("INSERT INTO outbox (event_id, kind, key, body, created_at) VALUES %s ON CONFLICT (event_id) DO NOTHING" % ",".join(["(?,?,?,?,?)"]*batch), [x for i in ids for x in ("sc:"+i, "split.computed", i, "", now)])
    c.execute("INSERT INTO volumes (kind, subject, currency, month, amount) VALUES %s ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = excluded.amount" % ",".join(["(?,?,?,?,?)"]*len(keys)), [x for k in keys for x in k + (5,)])
    c.execute("COMMIT")
while time.time() < end:
    one_batch(n); commits += 1; n += batch
el = time.time() - t0
print(f"batch={batch} orders/s={n/el:.0f} commits/s={commits/el:.0f} ms/commit={el/commits*1000:.2f}")

# FRAMES=1: one more batch on an emptied WAL, then which table or index each of its WAL
# frames (pages) belongs to (SQLite's dbstat), most first: where a batch's bytes go.
if os.environ.get("FRAMES") == "1":
    import collections, struct
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    one_batch(n)
    wal = open(db + "-wal", "rb").read()
    size = struct.unpack(">I", wal[8:12])[0]
    pages = [struct.unpack(">I", wal[o:o + 4])[0] for o in range(32, len(wal) - size - 23, size + 24)]
    owner = dict(c.execute("SELECT pageno, name FROM dbstat").fetchall())
    print(f"one batch of {batch} after {n} orders: {len(pages)} WAL frames")
    for name, k in collections.Counter(owner.get(p, "?") for p in pages).most_common():
        print(f"  {k:5d}  {name}")
