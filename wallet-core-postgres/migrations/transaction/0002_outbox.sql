-- The transactional outbox: rows written in the unit that causes them,
-- claimed by relays under a lease, marked sent once published, and pruned
-- after the retention.

CREATE TABLE outbox (
    seq           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id   uuid        NOT NULL,
    -- The event's envelope as JSON: the event itself, or for a dead letter
    -- the refused event as it was received.
    envelope      jsonb       NOT NULL,
    -- NULL for an event; why the event was refused for a dead letter.
    dead_letter   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    lease_worker  uuid,
    lease_until   timestamptz,
    sent_at       timestamptz
);

-- What relays claim: unsent rows, oldest first.
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
-- The per-transfer order check: older unsent rows of one transfer.
CREATE INDEX outbox_unsent_transfer ON outbox (transfer_id, seq) WHERE sent_at IS NULL;
-- Pruning: sent rows by age.
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
