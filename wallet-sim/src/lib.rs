//! Deterministic simulation of the wallet saga.
