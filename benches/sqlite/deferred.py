# benches/sqlite/deferred.py DB BATCH SECONDS: the SQLite ceiling of durable batches with
# the per-account rows (split_accounts, entries) written in the order's own transaction
# (MODE=now) or held back and written per account, a slice of SLICE accounts per
# transaction, those with the most pending rows first (MODE=slice): does gathering an
# account's rows before writing them save pages? PROMOTERS, PAGE_SIZE; FRAMES=1 prints
# where 20 more batches' WAL frames go (RESULTS.md §17).
import sqlite3, sys, time, glob, os, random, json, collections
db = sys.argv[1]; batch = int(sys.argv[2]); secs = float(sys.argv[3])
mode = os.environ.get("MODE", "now"); slice_n = int(os.environ.get("SLICE", "60"))
promoters = int(os.environ.get("PROMOTERS", "1000"))
for f in glob.glob(db + "*"): os.remove(f)
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA page_size=%d" % int(os.environ.get("PAGE_SIZE", "4096"))); c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=FULL")
c.execute("PRAGMA cache_size=-65536"); c.execute("PRAGMA temp_store=MEMORY")
c.execute("PRAGMA wal_autocheckpoint=4096"); c.execute("PRAGMA foreign_keys=ON")
for m in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../migrations/sqlite/*.sql"))):
    c.executescript(open(m).read())
c.execute("CREATE TABLE ledger_mark (id INTEGER PRIMARY KEY CHECK (id = 1), upto INTEGER NOT NULL)")
c.execute("INSERT INTO ledger_mark VALUES (1, 0)")
result = json.dumps({"x": "y" * 3150})
pending = collections.defaultdict(list)  # account -> rows
import struct
frames = [0]; last = [0]
def mx():
    return struct.unpack("<I", open(db + "-shm", "rb").read(20)[16:20])[0]
n = 0; t0 = time.time(); end = t0 + secs; commits = 0; t_us = 1_793_491_200_000_000
def accounts():
    chain = random.randrange(promoters // 5); levels = random.randint(1, 5)
    return ["merchant:m%02d" % random.randrange(50), "platform", "partner:pa", "channel:%s" % random.choice(["alipay", "wechat", "card"])] + ["promoter:p%03d-%d" % (chain, d) for d in range(1, levels + 1)]
def one_batch(n):
    global t_us
    c.execute("BEGIN IMMEDIATE")
    ids = ["o%09d" % (n + i) for i in range(batch)]
    c.execute("SELECT order_id, fingerprint, result FROM splits WHERE order_id IN (%s)" % ",".join("?"*batch), ids).fetchall()
    c.executemany("INSERT INTO buyers (buyer, first_order_id) VALUES (?,?) ON CONFLICT (buyer) DO NOTHING", [("b%d" % random.randrange(5000), i) for i in ids])
    rows_sa = []; rows_e = []
    for i in ids:
        t_us += 10_000; paid = t_us - random.randrange(5_000_000)
        c.execute("INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at, ruleset_version, paid, sales, primary_promoter, month, result, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  (i, "f"*64, "m1", "b"+i, "CNY", paid, 1, 10000, 10000, "p1", "2026-12", result, t_us))
        for a in accounts():
            rows_sa.append((a, paid, i, "CNY", 100, 1)); rows_e.append((a, "CNY", 100, 0, paid + 7*86400*10**6, "split", i, i, t_us))
    c.executemany("INSERT INTO outbox (event_id, kind, key, body, created_at) VALUES (?,?,?,?,?) ON CONFLICT (event_id) DO NOTHING", [("sc:"+i, "split.computed", i, "", t_us) for i in ids])
    keys = set()
    for i in range(batch):
        keys.add(("merchant", "m%02d" % random.randrange(50))); keys.add(("promoter", "p%03d-1" % random.randrange(promoters // 5)))
    c.executemany("INSERT INTO volumes (kind, subject, currency, month, amount) VALUES (?,?,'CNY','2026-12',5) ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = excluded.amount", sorted(keys))
    if mode == "now":
        c.executemany("INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version) VALUES (?,?,?,?,?,?)", rows_sa)
        c.executemany("INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at) VALUES (?,?,?,?,?,?,?,?,?)", rows_e)
    else:
        for sa, e in zip(rows_sa, rows_e): pending[sa[0]].append((sa, e))
        top = sorted(pending, key=lambda a: len(pending[a]), reverse=True)[:slice_n]
        for a in top:
            rs = pending.pop(a)
            c.executemany("INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version) VALUES (?,?,?,?,?,?)", [r[0] for r in rs])
            c.executemany("INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at) VALUES (?,?,?,?,?,?,?,?,?)", [r[1] for r in rs])
        c.execute("UPDATE ledger_mark SET upto = ? WHERE id = 1", (n,))
    c.execute("COMMIT")
while time.time() < end:
    one_batch(n); commits += 1; n += batch
    m = mx(); frames[0] += (m - last[0]) if m >= last[0] else m; last[0] = m
el = time.time() - t0
print(f"mode={mode} slice={slice_n} promoters={promoters} batch={batch} orders/s={n/el:.0f} ms/commit={el/commits*1000:.2f} pending_rows={sum(map(len, pending.values()))} frames/commit={frames[0]/commits:.0f}")
if os.environ.get("FRAMES") == "1":
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for k in range(20): one_batch(n); n += batch
    wal = open(db + "-wal", "rb").read()
    size = struct.unpack(">I", wal[8:12])[0]
    pages = [struct.unpack(">I", wal[o:o + 4])[0] for o in range(32, len(wal) - size - 23, size + 24)]
    owner = dict(c.execute("SELECT pageno, name FROM dbstat").fetchall())
    print(f"20 batches: {len(pages)/20:.0f} WAL frames per batch")
    for name, k in collections.Counter(owner.get(p, "?") for p in pages).most_common(10):
        print(f"  {k/20:7.1f}  {name}")
