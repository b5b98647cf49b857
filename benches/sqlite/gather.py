# Would gathering a commit's WAL writes into one write make SQLite's commits cheaper on
# this disk? SQLite writes each WAL frame as two pwrite calls (a 24-byte header, then the
# page): about 700 calls per batch of benches/sqlite/ceiling.py. This runs ceiling.py
# unchanged on apsw (PyPI: pip install apsw), through one of three VFSes:
#   plain   SQLite's own unix VFS (the baseline of this script: apsw, no Python VFS)
#   pass    a Python VFS that passes every WAL write straight through (its own cost)
#   gather  the same VFS, gathering contiguous WAL writes and writing them in chunks of
#           < 128 KiB (unix xWrite takes no more) before any read, sync, size, truncate
#           or close of the WAL
# gather - pass is what gathering saves; pass - plain is the Python VFS's own cost.
#   python3 benches/sqlite/gather.py plain|pass|gather DB_PATH BATCH SECONDS
import os, runpy, sqlite3, sys
import apsw

mode = sys.argv.pop(1)
stats = {"wal_writes": 0, "os_writes": 0}
CHUNK = 0x1F000


class File(apsw.VFSFile):
    def __init__(self, vfs, name, flags):
        super().__init__("", name, flags)
        self.wal = bool(flags[0] & apsw.mapping_open_flags["SQLITE_OPEN_WAL"])
        self.buf, self.start = bytearray(), 0

    def flush(self):
        data = bytes(self.buf)
        for i in range(0, len(data), CHUNK):
            super().xWrite(data[i:i + CHUNK], self.start + i)
            stats["os_writes"] += 1
        self.buf = bytearray()

    def xWrite(self, data, offset):
        if not self.wal:
            return super().xWrite(data, offset)
        stats["wal_writes"] += 1
        if mode == "pass":
            stats["os_writes"] += 1
            return super().xWrite(data, offset)
        if self.buf and offset != self.start + len(self.buf):
            self.flush()
        if not self.buf:
            self.start = offset
        self.buf += data

    def xRead(self, amount, offset):
        self.flush()
        return super().xRead(amount, offset)

    def xSync(self, flags):
        self.flush()
        return super().xSync(flags)

    def xFileSize(self):
        self.flush()
        return super().xFileSize()

    def xTruncate(self, size):
        self.flush()
        return super().xTruncate(size)

    def xClose(self):
        self.flush()
        return super().xClose()


class Vfs(apsw.VFS):
    def __init__(self):
        super().__init__("gather", "")

    def xOpen(self, name, flags):
        return File(self, name, flags)


vfs = Vfs()


class Rows(list):
    def fetchall(self):
        return self


class Connection:
    """The part of sqlite3.Connection that ceiling.py uses, on apsw (autocommit, as
    ceiling.py's isolation_level=None); every statement runs to its end at once."""

    def __init__(self, path):
        self.c = apsw.Connection(path, **({} if mode == "plain" else {"vfs": "gather"}))

    def execute(self, sql, args=()):
        return Rows(self.c.cursor().execute(sql, args))

    def executescript(self, sql):
        list(self.c.cursor().execute(sql))


assert mode in ("plain", "pass", "gather"), mode
sqlite3.connect = lambda path, **_: Connection(path)
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ceiling.py"), run_name="__main__")
print(mode, stats)
