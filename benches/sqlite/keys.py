# benches/sqlite/keys.py DB BATCH SECONDS: WAL frames per commit and orders/s of the rows a
# batch of new orders writes (as benches/sqlite/ceiling.py), with the server's text keys
# and ids (KEYS=text: "promoter:bench-p-123-4", "bench-<run>-s1-<n>") or compact ones
# (KEYS=int: split_accounts and the entries' per-account index keyed by an integer account
# id, and split_accounts naming the split by its rowid, or by its order id with REF=oid).
# Orders are paid about in sequence (as `prorata bench --paid-at live`); 30,000 orders are
# stored before the measured seconds so every account spans many pages (RESULTS.md §17).
import sqlite3, sys, time, glob, os, random, json, collections, struct
db = sys.argv[1]; batch = int(sys.argv[2]); secs = float(sys.argv[3]); keys = os.environ.get("KEYS", "text")
for f in glob.glob(db + "*"): os.remove(f)
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=FULL")
c.execute("PRAGMA cache_size=-65536"); c.execute("PRAGMA wal_autocheckpoint=4096")
for m in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../migrations/sqlite/*.sql"))):
    c.executescript(open(m).read())
if keys == "int":
    c.executescript("""
    DROP TRIGGER split_accounts_no_update; DROP TRIGGER split_accounts_no_delete;
    DROP TABLE split_accounts;
    CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE split_accounts (account INTEGER NOT NULL, paid_at INTEGER NOT NULL, split ANY NOT NULL,
        currency TEXT NOT NULL, amount INTEGER NOT NULL, ruleset_version INTEGER NOT NULL, PRIMARY KEY (account, paid_at, split));
    ALTER TABLE entries ADD COLUMN account_id INTEGER;
    DROP INDEX entries_account; CREATE INDEX entries_account ON entries (account_id, currency, id);
    """)
acct_ids = {}
def aid(name):
    if name not in acct_ids:
        c.execute("INSERT INTO accounts (name) VALUES (?)", (name,)); acct_ids[name] = c.execute("SELECT last_insert_rowid()").fetchone()[0]
    return acct_ids[name]
result = json.dumps({"x": "y" * 2600})
prefix = "bench-19aea3f2b1c-s1"
n = 0; t0 = time.time(); end = t0 + secs; commits = 0; t_us = 1_793_491_200_000_000
def accounts():
    chain = random.randrange(200); levels = random.randint(1, 5)
    return ["merchant:bench-m-%02d" % random.randrange(50), "platform", "partner:bench-partner", "channel:%s" % random.choice(["alipay", "wechat", "default"])] + ["promoter:bench-p-%03d-%d" % (chain, d) for d in range(1, levels + 1)]
frames = 0; last = 0
def mx(): return struct.unpack("<I", open(db + "-shm", "rb").read(20)[16:20])[0]
def one_batch(n):
    global t_us
    c.execute("BEGIN IMMEDIATE")
    ids = ["%s-%d" % (prefix, n + i) for i in range(batch)]
    for i in ids: c.execute("SELECT fingerprint, result FROM splits WHERE order_id = ?", (i,)).fetchall()
    c.executemany("INSERT INTO buyers (buyer, first_order_id) VALUES (?,?) ON CONFLICT (buyer) DO NOTHING", [("bench-c-%03d-%d-%d" % (random.randrange(200), random.randint(1,5), random.randrange(5)), i) for i in ids])
    for i in ids:
        t_us += 10_000; paid = t_us - random.randrange(5_000_000)
        c.execute("INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at, ruleset_version, paid, sales, primary_promoter, month, result, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  (i, "f"*64, "bench-m-01", "b"+i, "CNY", paid, 1, 10000, 10000, "p1", "2026-11", result, t_us))
        rowid = c.execute("SELECT last_insert_rowid()").fetchone()[0]
        accts = accounts()
        if keys == "int":
            c.executemany("INSERT INTO split_accounts (account, paid_at, split, currency, amount, ruleset_version) VALUES (?,?,?,?,?,?)", [(aid(a), paid, i if os.environ.get("REF") == "oid" else rowid, "CNY", 100, 1) for a in accts])
            c.executemany("INSERT INTO entries (account, account_id, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)", [(a, aid(a), "CNY", 100, 0, paid + 7*86400*10**6, "split", i, i, t_us) for a in accts])
        else:
            c.executemany("INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version) VALUES (?,?,?,?,?,?)", [(a, paid, i, "CNY", 100, 1) for a in accts])
            c.executemany("INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at) VALUES (?,?,?,?,?,?,?,?,?)", [(a, "CNY", 100, 0, paid + 7*86400*10**6, "split", i, i, t_us) for a in accts])
    c.executemany("INSERT INTO outbox (event_id, kind, key, body, created_at) VALUES (?,?,?,?,?) ON CONFLICT (event_id) DO NOTHING", [("split_computed:"+i, "split_computed", i, "", t_us) for i in ids])
    ks = set()
    for i in range(batch):
        ks.add(("merchant", "bench-m-%02d" % random.randrange(50))); ks.add(("promoter", "bench-p-%03d-1" % random.randrange(200)))
    c.executemany("INSERT INTO volumes (kind, subject, currency, month, amount) VALUES (?,?,'CNY','2026-11',5) ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = excluded.amount", sorted(ks))
    c.execute("COMMIT")
# warm: fill some history first so accounts span many pages
while n < 30000:
    one_batch(n); n += batch
t0 = time.time(); end = t0 + secs; n0 = n; last = mx()
while time.time() < end:
    one_batch(n); commits += 1; n += batch
    m = mx(); frames += (m - last) if m >= last else m; last = m
el = time.time() - t0
print(f"keys={keys} batch={batch} orders/s={(n-n0)/el:.0f} ms/commit={el/commits*1000:.2f} frames/commit={frames/commits:.0f}")
