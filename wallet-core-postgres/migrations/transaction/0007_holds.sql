-- Holds: a transfer of kind 'hold' reserves a wallet's funds until a
-- capture (a transfer whose hold_id names the hold) takes them, a void, or
-- its expiry. A hold that names no receiver stores its own wallet as the
-- receiver. The sweeper claims HELD holds past their expiry under a lease
-- of its own, as the retrier claims INITIATED transfers.
ALTER TABLE transfers DROP CONSTRAINT transfers_kind_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_kind_check
    CHECK (kind IN ('transfer', 'deposit', 'withdrawal', 'hold'));
ALTER TABLE transfers DROP CONSTRAINT transfers_status_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_status_check
    CHECK (status IN ('INITIATED', 'RESERVED', 'SUCCEEDED', 'FAILED',
                      'HELD', 'CAPTURED', 'VOIDED', 'EXPIRED'));

ALTER TABLE transfers
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN hold_id      uuid,
    ADD COLUMN captured_by  uuid,
    ADD COLUMN sweep_worker uuid,
    ADD COLUMN sweep_until  timestamptz,
    ADD CONSTRAINT transfers_hold_expiry CHECK ((kind = 'hold') = (expires_at IS NOT NULL)),
    ADD CONSTRAINT transfers_captured_by CHECK ((status = 'CAPTURED') = (captured_by IS NOT NULL)),
    ADD CONSTRAINT transfers_hold_statuses
        CHECK (kind = 'hold' OR status NOT IN ('HELD', 'CAPTURED', 'VOIDED', 'EXPIRED'));

-- The sweeper's queue: HELD holds, soonest expiry first.
CREATE INDEX transfers_held ON transfers (expires_at, id) WHERE status = 'HELD';
