-- A row the relay cannot read is set aside here, with why, instead of
-- failing every claim that meets it: it is never claimed again until an
-- operator releases it (walletctl outbox release).
ALTER TABLE outbox
    ADD COLUMN quarantined_at   timestamptz,
    ADD COLUMN quarantine_error text;

CREATE INDEX outbox_quarantined ON outbox (seq) WHERE quarantined_at IS NOT NULL;
