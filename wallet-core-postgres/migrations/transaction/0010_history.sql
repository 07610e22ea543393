-- The history: transfers newest first (by created_at, then id), of one
-- wallet or of all. A wallet's page merges two index scans, the transfers
-- it sends and those it receives, each read backwards from the cursor and
-- stopped at the page's size; all transfers' pages read the third index
-- the same way. A filter on the reference reads the transfers_reference
-- index instead.
CREATE INDEX transfers_sent ON transfers (sender_wallet_id, created_at, id);
CREATE INDEX transfers_received ON transfers (receiver_wallet_id, created_at, id);
CREATE INDEX transfers_created ON transfers (created_at, id);
