-- After the sale: reversals and redemptions (movements), entries per account, payouts,
-- and the outbox of events. Everything but outbox.published_at is insert-only.

CREATE TABLE movements (
    kind        TEXT NOT NULL CHECK (kind IN ('refund', 'redemption')),
    id          TEXT NOT NULL,
    order_id    TEXT NOT NULL REFERENCES splits (order_id),
    fingerprint TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX movements_order ON movements (order_id);

-- One signed entry per account and source. Deferred entries (prepaid cards) never become
-- available themselves; redemptions move value out of them. A paid or reserved entry is
-- one in a payout batch whose confirmation for the account is not 'failed'.
CREATE TABLE entries (
    id           BIGSERIAL PRIMARY KEY,
    account      TEXT NOT NULL,
    currency     TEXT NOT NULL,
    amount       BIGINT NOT NULL,
    deferred     BOOLEAN NOT NULL,
    available_at TIMESTAMPTZ,
    source_kind  TEXT NOT NULL CHECK (source_kind IN ('split', 'refund', 'redemption')),
    source_id    TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    CHECK (deferred OR available_at IS NOT NULL)
);
CREATE INDEX entries_account ON entries (account, currency, id);
CREATE INDEX entries_available ON entries (available_at) WHERE NOT deferred;

CREATE TABLE payout_batches (
    batch_id    TEXT PRIMARY KEY,
    as_of       TIMESTAMPTZ NOT NULL,
    minimum     BIGINT NOT NULL,
    fingerprint TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE payout_entries (
    batch_id TEXT NOT NULL REFERENCES payout_batches (batch_id),
    account  TEXT NOT NULL,
    entry_id BIGINT NOT NULL REFERENCES entries (id),
    PRIMARY KEY (batch_id, entry_id)
);
CREATE INDEX payout_entries_entry ON payout_entries (entry_id);

CREATE TABLE payout_confirmations (
    batch_id     TEXT NOT NULL REFERENCES payout_batches (batch_id),
    account      TEXT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('paid', 'failed')),
    confirmed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (batch_id, account)
);

CREATE TABLE outbox (
    seq          BIGSERIAL PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TRIGGER movements_immutable BEFORE UPDATE OR DELETE ON movements
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
CREATE TRIGGER entries_immutable BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
CREATE TRIGGER payout_batches_immutable BEFORE UPDATE OR DELETE ON payout_batches
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
CREATE TRIGGER payout_entries_immutable BEFORE UPDATE OR DELETE ON payout_entries
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
CREATE TRIGGER payout_confirmations_immutable BEFORE UPDATE OR DELETE ON payout_confirmations
    FOR EACH ROW EXECUTE FUNCTION prorata_immutable();
