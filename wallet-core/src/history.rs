//! A wallet's or the whole service's transfers, newest first, a page at a
//! time: what the transfer store's `history` read answers.
//!
//! Transfers come in the order of their creation, newest first: by
//! `created_at`, then by id among those created at the same instant. A
//! page ends at a [`HistoryCursor`], the last transfer's place in that
//! order, and the next page starts strictly after it. Transfers created
//! after the first page was read are newer than every cursor, so paging
//! on never sees one twice nor skips one that was there; statuses may
//! change between pages, and a filter on the status sees each transfer
//! as it is when its page is read.

use std::fmt;

use crate::ids::{TransferId, WalletId};
use crate::tags::Reference;
use crate::time::Timestamp;
use crate::transfer::{Transfer, TransferKind, TransferStatus};

/// The most transfers one page holds.
pub const MAX_PAGE: usize = 500;

/// Which transfers, from where, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only those this wallet sends or receives.
    pub wallet: Option<WalletId>,
    /// Only those in this status.
    pub status: Option<TransferStatus>,
    /// Only those of this kind.
    pub kind: Option<TransferKind>,
    /// Only the one with this reference (in any wallet, or in `wallet`).
    pub reference: Option<Reference>,
    /// Only those created at or after this time.
    pub since: Option<Timestamp>,
    /// Only those created before this time.
    pub until: Option<Timestamp>,
    /// Only those after this place: the cursor of the page before.
    pub after: Option<HistoryCursor>,
    /// How many at most, 1 to [`MAX_PAGE`].
    pub limit: usize,
}

impl HistoryQuery {
    /// Every transfer, newest first, `limit` at a time.
    pub fn all(limit: usize) -> HistoryQuery {
        HistoryQuery {
            wallet: None,
            status: None,
            kind: None,
            reference: None,
            since: None,
            until: None,
            after: None,
            limit,
        }
    }

    /// Whether `transfer` passes the filters and comes after the cursor:
    /// the one statement of what a page holds, which an adapter's query
    /// must agree with.
    pub fn matches(&self, transfer: &Transfer) -> bool {
        let t = transfer;
        self.wallet
            .is_none_or(|w| t.sender_wallet_id == w || t.receiver_wallet_id == w)
            && self.status.is_none_or(|s| t.status == s)
            && self.kind.is_none_or(|k| t.kind == k)
            && self
                .reference
                .as_ref()
                .is_none_or(|r| t.tags.reference.as_ref() == Some(r))
            && self.since.is_none_or(|since| t.created_at >= since)
            && self.until.is_none_or(|until| t.created_at < until)
            && self.after.is_none_or(|after| HistoryCursor::of(t) < after)
    }

    /// The page of `transfers` this query asks for: those that match,
    /// newest first, at most `limit`. For adapters that hold their
    /// transfers in memory.
    pub fn page<'a>(&self, transfers: impl IntoIterator<Item = &'a Transfer>) -> HistoryPage {
        let mut page: Vec<Transfer> = transfers
            .into_iter()
            .filter(|t| self.matches(t))
            .cloned()
            .collect();
        page.sort_by_key(|t| std::cmp::Reverse(HistoryCursor::of(t)));
        page.truncate(self.limit);
        HistoryPage::of(page, self.limit)
    }
}

/// A transfer's place in the history's order: later places are newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HistoryCursor {
    /// When it was created.
    pub created_at: Timestamp,
    /// Its id, among those created at the same instant.
    pub id: TransferId,
}

impl HistoryCursor {
    /// The place of `transfer`.
    pub fn of(transfer: &Transfer) -> HistoryCursor {
        HistoryCursor {
            created_at: transfer.created_at,
            id: transfer.id,
        }
    }

    /// The cursor as an opaque token of 48 hexadecimal digits: the time in
    /// nanoseconds since 1970, then the id.
    pub fn token(&self) -> String {
        let nanos = self.created_at.timestamp_nanos_opt().unwrap_or(i64::MAX);
        format!("{:016x}{}", nanos, self.id.as_uuid().simple())
    }

    /// Reads a token of [`HistoryCursor::token`].
    pub fn parse(token: &str) -> Result<HistoryCursor, InvalidCursor> {
        // Exactly what `token` writes: lower-case digits, a time from 1970.
        let digits = token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if token.len() != 48 || !digits || token.as_bytes()[0] > b'7' {
            return Err(InvalidCursor);
        }
        let (time, id) = token.split_at(16);
        let nanos = i64::from_str_radix(time, 16).map_err(|_| InvalidCursor)?;
        let id = uuid::Uuid::try_parse(id).map_err(|_| InvalidCursor)?;
        Ok(HistoryCursor {
            created_at: chrono::DateTime::from_timestamp_nanos(nanos),
            id: TransferId::from_uuid(id),
        })
    }
}

/// A token that is no [`HistoryCursor`]. HTTP 400 `invalid_cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not one a page of history gave")]
pub struct InvalidCursor;

/// One page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The transfers, newest first.
    pub transfers: Vec<Transfer>,
    /// Where the next page starts, when this one is full; `None` when there
    /// is nothing older.
    pub next: Option<HistoryCursor>,
}

impl HistoryPage {
    /// The page of `transfers` (newest first, at most `limit`) read for a
    /// query of `limit`: it has a next page when it is full.
    pub fn of(transfers: Vec<Transfer>, limit: usize) -> HistoryPage {
        let next = match transfers.last() {
            Some(last) if transfers.len() >= limit => Some(HistoryCursor::of(last)),
            _ => None,
        };
        HistoryPage { transfers, next }
    }
}

impl fmt::Display for HistoryCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_token_reads_back_to_the_same_place() {
        let at = chrono::DateTime::from_timestamp_nanos(1_765_000_000_123_456_789);
        let cursor = HistoryCursor {
            created_at: at,
            id: TransferId::from_uuid(uuid::Uuid::from_u128(0xabc)),
        };
        let token = cursor.token();
        assert_eq!(token.len(), 48);
        assert_eq!(HistoryCursor::parse(&token), Ok(cursor));
        assert_eq!(HistoryCursor::parse(&token[1..]), Err(InvalidCursor));
        assert_eq!(HistoryCursor::parse(&"z".repeat(48)), Err(InvalidCursor));
        assert_eq!(HistoryCursor::parse(""), Err(InvalidCursor));
        assert_eq!(
            HistoryCursor::parse(&token.to_uppercase()),
            Err(InvalidCursor)
        );
        let before_1970 = format!("8{}", &token[1..]);
        assert_eq!(HistoryCursor::parse(&before_1970), Err(InvalidCursor));
    }
}
