-- Holds: a reservation of kind 'hold' is 'held' until a capture converts
-- it (captured_by names the capture, whose own reservation has hold_id),
-- it is voided, or it expires at expires_at.
ALTER TABLE reservations DROP CONSTRAINT reservations_kind_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_kind_check
    CHECK (kind IN ('transfer', 'deposit', 'withdrawal', 'hold'));
ALTER TABLE reservations DROP CONSTRAINT reservations_state_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_state_check
    CHECK (state IN ('reserved', 'captured', 'released', 'rejected',
                     'held', 'converted', 'voided', 'expired'));

ALTER TABLE reservations
    ADD COLUMN expires_at  timestamptz,
    ADD COLUMN hold_id     uuid,
    ADD COLUMN captured_by uuid,
    ADD CONSTRAINT reservations_hold_expiry CHECK ((kind = 'hold') = (expires_at IS NOT NULL)),
    ADD CONSTRAINT reservations_captured_by CHECK ((state = 'converted') = (captured_by IS NOT NULL));
