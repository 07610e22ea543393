-- A client's reference and metadata on a transfer or hold. A reference is
-- unique in the wallet it belongs to (`reference_wallet`: the user wallet
-- whose money leaves, or for a deposit the one it enters), which the
-- insert writes beside it. Nullable columns are added without rewriting
-- the table; the unique index serves both the uniqueness and the history's
-- filter by reference, with or without a wallet.
ALTER TABLE transfers
    ADD COLUMN reference        text CHECK (char_length(reference) BETWEEN 1 AND 128),
    ADD COLUMN reference_wallet uuid,
    ADD COLUMN metadata         jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    ADD CONSTRAINT transfers_reference_scoped
        CHECK ((reference IS NULL) = (reference_wallet IS NULL));

CREATE UNIQUE INDEX transfers_reference ON transfers (reference, reference_wallet)
    WHERE reference IS NOT NULL;
