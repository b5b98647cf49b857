-- prorata schema, PostgreSQL.
-- Splits are immutable: a trigger refuses UPDATE and DELETE on stored results.

CREATE TABLE rulesets (
    version        BIGINT PRIMARY KEY,
    effective_from TIMESTAMPTZ,                 -- NULL: from the beginning of time
    canary         TEXT,                        -- JSON array of merchant ids, NULL: all
    document       TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    published_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE promoters (
    id         TEXT PRIMARY KEY,
    parent     TEXT REFERENCES promoters (id),
    grade      TEXT,
    status     TEXT NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CHECK (parent IS NULL OR parent <> id)
);
CREATE INDEX promoters_parent ON promoters (parent);

CREATE TABLE bindings (
    customer TEXT PRIMARY KEY,
    promoter TEXT NOT NULL REFERENCES promoters (id),
    bound_at TIMESTAMPTZ NOT NULL
);

-- A buyer's first stored order: drives the first_order condition.
CREATE TABLE buyers (
    buyer          TEXT PRIMARY KEY,
    first_order_id TEXT NOT NULL
);

-- Month volume counters (Σ paid, shipping excluded), moved in the same transaction as
-- the result they come from. kind: 'merchant' | 'promoter'.
CREATE TABLE volumes (
    kind     TEXT NOT NULL,
    subject  TEXT NOT NULL,
    currency TEXT NOT NULL,
    month    TEXT NOT NULL,
    amount   BIGINT NOT NULL,
    PRIMARY KEY (kind, subject, currency, month)
);

CREATE TABLE splits (
    order_id         TEXT PRIMARY KEY,
    fingerprint      TEXT NOT NULL,
    merchant         TEXT NOT NULL,
    buyer            TEXT NOT NULL,
    currency         TEXT NOT NULL,
    paid_at          TIMESTAMPTZ NOT NULL,
    ruleset_version  BIGINT NOT NULL,
    paid             BIGINT NOT NULL CHECK (paid >= 0),
    sales            BIGINT NOT NULL CHECK (sales >= 0),
    primary_promoter TEXT,
    month            TEXT NOT NULL,
    result           TEXT NOT NULL,             -- the result exactly as first served
    created_at       TIMESTAMPTZ NOT NULL
);

-- One row per account per order: serves ListSplits by account and time.
CREATE TABLE split_accounts (
    account         TEXT NOT NULL,
    paid_at         TIMESTAMPTZ NOT NULL,
    order_id        TEXT NOT NULL REFERENCES splits (order_id),
    currency        TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    ruleset_version BIGINT NOT NULL,
    PRIMARY KEY (account, paid_at, order_id)
);

CREATE FUNCTION prorata_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is immutable', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER splits_immutable BEFORE UPDATE OR DELETE ON splits
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
CREATE TRIGGER split_accounts_immutable BEFORE UPDATE OR DELETE ON split_accounts
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
CREATE TRIGGER rulesets_immutable BEFORE UPDATE OR DELETE ON rulesets
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
