-- The shop's own table, in the shop's own database. An order and its
-- payment are linked by the idempotency key written here first: the
-- transfer is started with it, and its id recorded once known.
CREATE TABLE orders (
    id                  uuid        PRIMARY KEY,
    buyer_wallet_id     uuid        NOT NULL,
    seller_wallet_id    uuid        NOT NULL,
    amount              numeric     NOT NULL CHECK (amount > 0),
    idempotency_key     text        NOT NULL UNIQUE,
    state               text        NOT NULL CHECK (state IN ('PENDING_PAYMENT', 'COMPLETED')),
    transfer_id         uuid        UNIQUE,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- COMPLETED exactly when the transfer is recorded.
    CHECK ((state = 'COMPLETED') = (transfer_id IS NOT NULL))
);

-- The recovery pass reads the orders still waiting for their transfer.
CREATE INDEX orders_pending ON orders (created_at) WHERE state = 'PENDING_PAYMENT';
