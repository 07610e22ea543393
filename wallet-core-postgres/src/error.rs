//! The one place where database failures become [`StoreError`]s.
//!
//! Transient failures (a serialization failure, a deadlock, a lock or
//! statement timeout, a lost connection, an exhausted pool, a server
//! shutting down) become [`StoreError::Unavailable`]: nothing was written
//! and the caller retries. Everything else is a bug or a broken constraint
//! and becomes [`StoreError::Integrity`]. Duplicates the core expects (a key
//! used again, a reserve repeated, an event delivered twice) never reach
//! this mapping: the statements that meet them say `ON CONFLICT` and the
//! adapter answers with the first outcome.

use wallet_core::ports::StoreError;

/// SQLSTATE classes and codes that mean "try again": the unit was rolled
/// back and the same unit may well succeed.
fn is_transient(code: &str) -> bool {
    matches!(
        code,
        // serialization_failure, deadlock_detected
        "40001" | "40P01"
        // lock_not_available (lock_timeout), query_canceled (statement_timeout)
        | "55P03" | "57014"
        // admin_shutdown, crash_shutdown, cannot_connect_now
        | "57P01" | "57P02" | "57P03"
        // too_many_connections
        | "53300"
    ) || code.starts_with("08") // connection exceptions
        || code.starts_with("53") // insufficient resources
}

/// Maps a database failure into the port's error.
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if is_transient(&code) => {
                StoreError::Unavailable(format!("{} ({code})", db.message()))
            }
            Some(code) => StoreError::Integrity(format!("{} ({code})", db.message())),
            None => StoreError::Integrity(db.message().to_owned()),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Integrity(error.to_string()),
    }
}

/// `result.map_err(store_error)`, shorter.
pub(crate) trait Db<T> {
    /// The result with its database error mapped.
    fn db(self) -> Result<T, StoreError>;
}

impl<T> Db<T> for Result<T, sqlx::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(store_error)
    }
}

/// Data read back that the core never writes: an integrity error.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Integrity(format!("unreadable row: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_retried_and_others_are_not() {
        for code in [
            "40001", "40P01", "55P03", "57014", "08006", "08003", "53300", "57P01",
        ] {
            assert!(is_transient(code), "{code} should be transient");
        }
        for code in ["23505", "23514", "23503", "42P01", "22003", "XX000"] {
            assert!(!is_transient(code), "{code} should not be transient");
        }
    }

    #[test]
    fn pool_and_io_failures_are_unavailable() {
        assert!(matches!(
            store_error(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(matches!(
            store_error(sqlx::Error::Io(io)),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            store_error(sqlx::Error::RowNotFound),
            StoreError::Integrity(_)
        ));
    }
}
