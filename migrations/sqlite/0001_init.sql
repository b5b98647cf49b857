-- prorata schema, SQLite (the embedded default). Times are INTEGER microseconds since
-- the Unix epoch, UTC. Splits are immutable: triggers refuse UPDATE and DELETE.

CREATE TABLE rulesets (
    version        INTEGER PRIMARY KEY,
    effective_from INTEGER,                     -- NULL: from the beginning of time
    canary         TEXT,                        -- JSON array of merchant ids, NULL: all
    document       TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    published_at   INTEGER NOT NULL
);

CREATE TABLE promoters (
    id         TEXT PRIMARY KEY,
    parent     TEXT REFERENCES promoters (id),
    grade      TEXT,
    status     TEXT NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CHECK (parent IS NULL OR parent <> id)
);
CREATE INDEX promoters_parent ON promoters (parent);

CREATE TABLE bindings (
    customer TEXT PRIMARY KEY,
    promoter TEXT NOT NULL REFERENCES promoters (id),
    bound_at INTEGER NOT NULL
);

CREATE TABLE buyers (
    buyer          TEXT PRIMARY KEY,
    first_order_id TEXT NOT NULL
);

CREATE TABLE volumes (
    kind     TEXT NOT NULL,
    subject  TEXT NOT NULL,
    currency TEXT NOT NULL,
    month    TEXT NOT NULL,
    amount   INTEGER NOT NULL,
    PRIMARY KEY (kind, subject, currency, month)
);

CREATE TABLE splits (
    order_id         TEXT PRIMARY KEY,
    fingerprint      TEXT NOT NULL,
    merchant         TEXT NOT NULL,
    buyer            TEXT NOT NULL,
    currency         TEXT NOT NULL,
    paid_at          INTEGER NOT NULL,
    ruleset_version  INTEGER NOT NULL,
    paid             INTEGER NOT NULL CHECK (paid >= 0),
    sales            INTEGER NOT NULL CHECK (sales >= 0),
    primary_promoter TEXT,
    month            TEXT NOT NULL,
    result           TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);

CREATE TABLE split_accounts (
    account         TEXT NOT NULL,
    paid_at         INTEGER NOT NULL,
    order_id        TEXT NOT NULL REFERENCES splits (order_id),
    currency        TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount >= 0),
    ruleset_version INTEGER NOT NULL,
    PRIMARY KEY (account, paid_at, order_id)
);

CREATE TRIGGER splits_no_update BEFORE UPDATE ON splits BEGIN SELECT RAISE(ABORT, 'splits is immutable'); END;
CREATE TRIGGER splits_no_delete BEFORE DELETE ON splits BEGIN SELECT RAISE(ABORT, 'splits is immutable'); END;
CREATE TRIGGER split_accounts_no_update BEFORE UPDATE ON split_accounts BEGIN SELECT RAISE(ABORT, 'split_accounts is immutable'); END;
CREATE TRIGGER split_accounts_no_delete BEFORE DELETE ON split_accounts BEGIN SELECT RAISE(ABORT, 'split_accounts is immutable'); END;
CREATE TRIGGER rulesets_no_update BEFORE UPDATE ON rulesets BEGIN SELECT RAISE(ABORT, 'rulesets is immutable'); END;
CREATE TRIGGER rulesets_no_delete BEFORE DELETE ON rulesets BEGIN SELECT RAISE(ABORT, 'rulesets is immutable'); END;
