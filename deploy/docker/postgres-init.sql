-- One database per service, as scripts/stack creates them.
CREATE DATABASE wallet_transaction;
CREATE DATABASE wallet_wallet;
CREATE DATABASE wallet_ledger;
