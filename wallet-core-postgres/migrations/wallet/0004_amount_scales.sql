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

-- Balances and held amounts have at most their currency's decimal places.
-- A rejected reservation keeps the amount it was asked for, as it came: an
-- over-scaled amount is one reason for a rejection.
ALTER TABLE wallets
    ADD CONSTRAINT wallets_balance_scale CHECK (
        scale(available) <= currency_scale(currency)
        AND scale(reserved) <= currency_scale(currency));

ALTER TABLE reservations
    ADD CONSTRAINT reservations_amount_scale CHECK (
        state = 'rejected' OR scale(amount) <= currency_scale(currency));
