-- An account's balance as of a time: the sum of its entries posted at or
-- before it. This index finds them by range and carries what the sum and
-- the position need, so the read is an index-only scan of the account's
-- entries up to the time (entries are never updated, so their pages stay
-- all-visible once vacuumed). `entries_account` stays for pages by seq.
--
-- Building it locks out postings for as long as it takes. On a large
-- ledger, build it beforehand without that lock, under this name:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS entries_account_posted_at
--       ON entries (account, posted_at) INCLUDE (seq, direction, amount, currency);
-- and this migration then finds it in place.
CREATE INDEX IF NOT EXISTS entries_account_posted_at
    ON entries (account, posted_at) INCLUDE (seq, direction, amount, currency);
