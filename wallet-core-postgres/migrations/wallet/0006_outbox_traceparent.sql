-- The trace context of the change that wrote each row (a W3C
-- traceparent), so the relay publishes the record in that trace. Null for
-- rows written without one: by a process that does not trace, or by a
-- build before this column.
ALTER TABLE outbox ADD COLUMN traceparent text;
