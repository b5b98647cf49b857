# benches/sqlite/walframes.py WAL DB: the commits of a copy of a running server's WAL file
# (one WAL generation: frames whose salt matches the header), and which table or index
# each commit's frames belong to, read with dbstat from the database file after the run.
# Used as: (sleep 9; cp /tmp/dur/NAME/db.sqlite-wal /tmp/wal) & benches/ab/durable.sh ...;
# python3 benches/sqlite/walframes.py /tmp/wal /tmp/dur/NAME/db.sqlite (RESULTS.md §17).
import struct, sys, sqlite3, collections
wal = open(sys.argv[1], 'rb').read(); db = sys.argv[2]
size = struct.unpack('>I', wal[8:12])[0]
salt = wal[16:24]
commits = []; cur = []
o = 32
while o + 24 + size <= len(wal):
    pg, dbsize = struct.unpack('>II', wal[o:o+8])
    if wal[o+8:o+16] != salt: break
    cur.append(pg)
    if dbsize: commits.append(cur); cur = []
    o += 24 + size
owner = dict(sqlite3.connect(db).execute('SELECT pageno, name FROM dbstat').fetchall())
print('commits', len(commits), 'frames/commit', sum(map(len, commits)) / max(1, len(commits)))
cnt = collections.Counter(owner.get(p, '?') for c in commits for p in c)
for k, v in cnt.most_common(): print('%8.1f  %s' % (v / len(commits), k))
