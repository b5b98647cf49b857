-- After the sale: movements, entries, payouts, outbox (see the PostgreSQL migration).
-- Times are INTEGER microseconds since the Unix epoch.

CREATE TABLE movements (
    kind        TEXT NOT NULL CHECK (kind IN ('refund', 'redemption')),
    id          TEXT NOT NULL,
    order_id    TEXT NOT NULL REFERENCES splits (order_id),
    fingerprint TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX movements_order ON movements (order_id);

CREATE TABLE entries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    account      TEXT NOT NULL,
    currency     TEXT NOT NULL,
    amount       INTEGER NOT NULL,
    deferred     INTEGER NOT NULL,
    available_at INTEGER,
    source_kind  TEXT NOT NULL CHECK (source_kind IN ('split', 'refund', 'redemption')),
    source_id    TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    CHECK (deferred OR available_at IS NOT NULL)
);
CREATE INDEX entries_account ON entries (account, currency, id);
CREATE INDEX entries_available ON entries (available_at) WHERE NOT deferred;

CREATE TABLE payout_batches (
    batch_id    TEXT PRIMARY KEY,
    as_of       INTEGER NOT NULL,
    minimum     INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE payout_entries (
    batch_id TEXT NOT NULL REFERENCES payout_batches (batch_id),
    account  TEXT NOT NULL,
    entry_id INTEGER NOT NULL REFERENCES entries (id),
    PRIMARY KEY (batch_id, entry_id)
);
CREATE INDEX payout_entries_entry ON payout_entries (entry_id);

CREATE TABLE payout_confirmations (
    batch_id     TEXT NOT NULL REFERENCES payout_batches (batch_id),
    account      TEXT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('paid', 'failed')),
    confirmed_at INTEGER NOT NULL,
    PRIMARY KEY (batch_id, account)
);

CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    published_at INTEGER
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TRIGGER movements_no_update BEFORE UPDATE ON movements BEGIN SELECT RAISE(ABORT, 'movements is immutable'); END;
CREATE TRIGGER movements_no_delete BEFORE DELETE ON movements BEGIN SELECT RAISE(ABORT, 'movements is immutable'); END;
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries BEGIN SELECT RAISE(ABORT, 'entries is immutable'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries BEGIN SELECT RAISE(ABORT, 'entries is immutable'); END;
CREATE TRIGGER payout_batches_no_update BEFORE UPDATE ON payout_batches BEGIN SELECT RAISE(ABORT, 'payout_batches is immutable'); END;
CREATE TRIGGER payout_batches_no_delete BEFORE DELETE ON payout_batches BEGIN SELECT RAISE(ABORT, 'payout_batches is immutable'); END;
CREATE TRIGGER payout_entries_no_update BEFORE UPDATE ON payout_entries BEGIN SELECT RAISE(ABORT, 'payout_entries is immutable'); END;
CREATE TRIGGER payout_entries_no_delete BEFORE DELETE ON payout_entries BEGIN SELECT RAISE(ABORT, 'payout_entries is immutable'); END;
CREATE TRIGGER payout_confirmations_no_update BEFORE UPDATE ON payout_confirmations BEGIN SELECT RAISE(ABORT, 'payout_confirmations is immutable'); END;
CREATE TRIGGER payout_confirmations_no_delete BEFORE DELETE ON payout_confirmations BEGIN SELECT RAISE(ABORT, 'payout_confirmations is immutable'); END;
