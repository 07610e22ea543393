-- Outcomes and accounts are append-only, like entries: a decided transfer
-- keeps its outcome and an account its first currency. The runtime role is
-- granted nothing on these tables but SELECT and INSERT; these triggers
-- refuse a change whoever asks, the owner role included.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger % are append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER outcomes_append_only
    BEFORE UPDATE OR DELETE ON outcomes
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE TRIGGER outcomes_no_truncate
    BEFORE TRUNCATE ON outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

CREATE TRIGGER accounts_append_only
    BEFORE UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE TRIGGER accounts_no_truncate
    BEFORE TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- The decimal places of each currency the system knows, as
-- wallet_core::money::Currency::ALL lists them (a test keeps the two
-- alike); -1 for any other code, which no amount fits. A currency added
-- to the core needs a migration that replaces this function.
CREATE FUNCTION currency_scale(code text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE code
        WHEN 'AUD' THEN 2
        WHEN 'BHD' THEN 3
        WHEN 'BRL' THEN 2
        WHEN 'CAD' THEN 2
        WHEN 'CHF' THEN 2
        WHEN 'CLP' THEN 0
        WHEN 'CNY' THEN 2
        WHEN 'CZK' THEN 2
        WHEN 'DKK' THEN 2
        WHEN 'EUR' THEN 2
        WHEN 'GBP' THEN 2
        WHEN 'HKD' THEN 2
        WHEN 'INR' THEN 2
        WHEN 'ISK' THEN 0
        WHEN 'JOD' THEN 3
        WHEN 'JPY' THEN 0
        WHEN 'KRW' THEN 0
        WHEN 'KWD' THEN 3
        WHEN 'MXN' THEN 2
        WHEN 'NOK' THEN 2
        WHEN 'NZD' THEN 2
        WHEN 'OMR' THEN 3
        WHEN 'PLN' THEN 2
        WHEN 'SEK' THEN 2
        WHEN 'SGD' THEN 2
        WHEN 'TND' THEN 3
        WHEN 'USD' THEN 2
        WHEN 'ZAR' THEN 2
        ELSE -1
    END
$$;

-- An entry's amount has at most its currency's decimal places (and its
-- currency is one the system knows).
ALTER TABLE entries
    ADD CONSTRAINT entries_amount_scale CHECK (scale(amount) <= currency_scale(currency));
