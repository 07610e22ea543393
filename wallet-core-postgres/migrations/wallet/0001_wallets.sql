-- The wallet service's database: user wallets (system accounts have no
-- row), reservations keyed by transfer, the inbox and the outbox.

CREATE TABLE wallets (
    id          uuid        PRIMARY KEY,
    currency    text        NOT NULL CHECK (length(currency) = 3),
    available   numeric     NOT NULL CHECK (available >= 0),
    reserved    numeric     NOT NULL CHECK (reserved >= 0),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- One reservation (hold) per transfer: the primary key is the transfer id.
CREATE TABLE reservations (
    transfer_id         uuid        PRIMARY KEY,
    correlation_id      uuid        NOT NULL,
    sender_wallet_id    uuid        NOT NULL,
    receiver_wallet_id  uuid        NOT NULL,
    amount              numeric     NOT NULL CHECK (amount > 0),
    currency            text        NOT NULL CHECK (length(currency) = 3),
    state               text        NOT NULL CHECK (state IN ('reserved', 'captured', 'released', 'rejected')),
    reason              text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    CHECK ((state = 'rejected') = (reason IS NOT NULL))
);

CREATE TABLE inbox (
    event_id      uuid        PRIMARY KEY,
    processed_at  timestamptz NOT NULL DEFAULT now()
);
