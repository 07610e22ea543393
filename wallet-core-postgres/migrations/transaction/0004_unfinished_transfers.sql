-- The transfers not terminal, by status and creation time: the transaction
-- service counts them by age every few seconds for its
-- `wallet_transfers_unfinished` gauge. The index holds only what is in
-- flight, so the count reads a handful of entries however many transfers
-- have finished.
CREATE INDEX transfers_unfinished ON transfers (status, created_at)
    WHERE status IN ('INITIATED', 'RESERVED');
