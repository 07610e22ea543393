//! Unit tests of the state machines and services that need the crate's
//! private test doubles (mockall mocks exist only under `cfg(test)`).
