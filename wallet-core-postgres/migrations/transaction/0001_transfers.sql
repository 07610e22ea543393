-- The transaction service's database: transfers, idempotency keys, the
-- inbox of consumed events and the outbox (dead letters only).

CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    fingerprint  text        NOT NULL,
    transfer_id  uuid        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    -- The transfer as the first response showed it, as JSON; NULL while
    -- that response is still being prepared.
    response     jsonb
);

CREATE TABLE transfers (
    id                  uuid        PRIMARY KEY,
    kind                text        NOT NULL CHECK (kind IN ('transfer', 'deposit', 'withdrawal')),
    status              text        NOT NULL CHECK (status IN ('INITIATED', 'RESERVED', 'SUCCEEDED', 'FAILED')),
    failure_reason      text,
    sender_wallet_id    uuid        NOT NULL,
    receiver_wallet_id  uuid        NOT NULL,
    amount              numeric     NOT NULL CHECK (amount > 0),
    currency            text        NOT NULL CHECK (length(currency) = 3),
    correlation_id      uuid        NOT NULL,
    idempotency_key     text        NOT NULL UNIQUE REFERENCES idempotency_keys (key),
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    -- The retrier's lease on an INITIATED transfer.
    lease_worker        uuid,
    lease_until         timestamptz,
    CHECK ((status = 'FAILED') = (failure_reason IS NOT NULL))
);

-- The retrier's queue: INITIATED transfers, oldest first.
CREATE INDEX transfers_initiated ON transfers (created_at, id) WHERE status = 'INITIATED';

CREATE TABLE inbox (
    event_id      uuid        PRIMARY KEY,
    processed_at  timestamptz NOT NULL DEFAULT now()
);
