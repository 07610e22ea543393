-- The balance check probes `outcomes` by primary key for each posted
-- transfer. Written as a plain NOT EXISTS, the planner turned it into a
-- hashed subplan that read the whole `outcomes` table once per posted
-- batch: a cost that grew with every transfer ever decided. `OFFSET 0`
-- keeps the subquery a per-transfer probe. Same rule as before.
CREATE OR REPLACE FUNCTION entries_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
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
                       WHERE o.transfer_id = n.transfer_id AND o.outcome = 'succeeded'
                       OFFSET 0)
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'unbalanced or unrecorded posting for transfer %', bad
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;
