-- What each reserve was asked for: a transfer between wallets, a deposit
-- from a system account or a withdrawal to one. The wallet service refuses
-- a system account on any other side. A reservation written without one
-- (stored before requests said their kind, or by an instance of the former
-- build still running during an upgrade) gets the kind its parties show:
-- a system account's id is below 2^24.
ALTER TABLE reservations
    ADD COLUMN kind text CHECK (kind IN ('transfer', 'deposit', 'withdrawal'));

CREATE FUNCTION reservations_kind_of_parties(sender uuid, receiver uuid) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN sender < '00000000-0000-0000-0000-000001000000' THEN 'deposit'
        WHEN receiver < '00000000-0000-0000-0000-000001000000' THEN 'withdrawal'
        ELSE 'transfer'
    END
$$;

UPDATE reservations SET kind = reservations_kind_of_parties(sender_wallet_id, receiver_wallet_id);

ALTER TABLE reservations ALTER COLUMN kind SET NOT NULL;

CREATE FUNCTION reservations_fill_kind() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind IS NULL THEN
        NEW.kind := reservations_kind_of_parties(NEW.sender_wallet_id, NEW.receiver_wallet_id);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER reservations_kind
    BEFORE INSERT ON reservations
    FOR EACH ROW EXECUTE FUNCTION reservations_fill_kind();
