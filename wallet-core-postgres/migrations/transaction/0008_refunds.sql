-- Refunds: a transfer whose refund_of names the SUCCEEDED transfer whose
-- money it sends back. A refund's store unit locks the original and reads
-- its refunds by this index.
ALTER TABLE transfers ADD COLUMN refund_of uuid REFERENCES transfers (id);
CREATE INDEX transfers_refunds ON transfers (refund_of, created_at, id) WHERE refund_of IS NOT NULL;
