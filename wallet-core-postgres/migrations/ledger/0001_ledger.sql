-- The ledger service's database: append-only entries, one outcome per
-- transfer, the first currency of each user account, the inbox and the
-- outbox. No row is updated per posting: balances are sums of entries.

-- The currency a user account got with its first entry. System accounts
-- have no row: their currency is in their id. Rows are only inserted.
CREATE TABLE accounts (
    id         uuid        PRIMARY KEY,
    currency   text        NOT NULL CHECK (length(currency) = 3),
    opened_at  timestamptz NOT NULL
);

CREATE TABLE entries (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id  uuid        NOT NULL,
    account      uuid        NOT NULL,
    direction    text        NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount       numeric     NOT NULL CHECK (amount > 0),
    currency     text        NOT NULL CHECK (length(currency) = 3),
    posted_at    timestamptz NOT NULL,
    -- One posting per transfer: one debit and one credit at most.
    UNIQUE (transfer_id, direction)
);

-- An account's entries newest first, and its balance as a sum.
CREATE INDEX entries_account ON entries (account, seq) INCLUDE (direction, amount, currency);
-- One posting's entries, for paging postings by transfer.
CREATE INDEX entries_transfer ON entries (transfer_id, seq);

-- One outcome per transfer.
CREATE TABLE outcomes (
    transfer_id  uuid        PRIMARY KEY,
    outcome      text        NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    reason       text,
    decided_at   timestamptz NOT NULL,
    CHECK ((outcome = 'failed') = (reason IS NOT NULL))
);

-- Entries are append-only: the database itself refuses to change or remove
-- one.
CREATE FUNCTION entries_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER entries_append_only
    BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION entries_refuse_change();

CREATE TRIGGER entries_no_truncate
    BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION entries_refuse_change();

-- Every statement that appends entries appends whole postings: per
-- transfer, one debit and one credit of the same amount and currency, and
-- the transfer has a 'succeeded' outcome (written in the same unit before
-- the entries).
CREATE FUNCTION entries_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad uuid;
BEGIN
    SELECT n.transfer_id INTO bad
    FROM appended n
    GROUP BY n.transfer_id
    HAVING count(*) <> 2
        OR count(DISTINCT n.currency) <> 1
        OR sum(CASE n.direction WHEN 'credit' THEN n.amount ELSE -n.amount END) <> 0
        OR NOT EXISTS (SELECT 1 FROM outcomes o
                       WHERE o.transfer_id = n.transfer_id AND o.outcome = 'succeeded')
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'unbalanced or unrecorded posting for transfer %', bad
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER entries_balanced
    AFTER INSERT ON entries
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION entries_check_balanced();

CREATE TABLE inbox (
    event_id      uuid        PRIMARY KEY,
    processed_at  timestamptz NOT NULL DEFAULT now()
);
