-- The single-database baseline the saga is compared with: 1,000 wallets and
-- an entry table. Load into an empty database, then run transfer.pgbench.
CREATE TABLE wallets (id int PRIMARY KEY, balance numeric NOT NULL);
CREATE TABLE entries (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer uuid NOT NULL,
    account int NOT NULL,
    amount numeric NOT NULL
);
INSERT INTO wallets SELECT g, 1000000 FROM generate_series(1, 1000) g;
-- One row a transaction, for commit.pgbench: what one durable commit costs
-- on this PostgreSQL and disk, alone.
CREATE TABLE commits (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
