//! The credential one service presents to another: a bearer token shared
//! by the wallet service's internal routes and their callers.

use std::fmt;
use std::str::FromStr;

use axum::http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq;

/// A bearer token. Its `Debug` and `Display` print `***`, so settings and
/// errors that hold one can be logged; only [`ServiceToken::expose`] and
/// [`ServiceToken::header_value`] give the secret away.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceToken(String);

/// Why a text is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Empty, or only blanks.
    #[error("the token is empty")]
    Empty,
    /// It holds a character an HTTP header cannot carry, or a blank.
    #[error("the token holds a blank or a character an HTTP header cannot carry")]
    Unprintable,
}

impl ServiceToken {
    /// `text` without its surrounding blanks (a file's final newline), as a
    /// token: at least one visible ASCII character and no blank inside.
    pub fn new(text: &str) -> Result<ServiceToken, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Unprintable);
        }
        Ok(ServiceToken(text.to_owned()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `Bearer <token>`, marked sensitive (HTTP clients and tracers that
    /// honour the mark leave it out of what they print).
    pub fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::try_from(format!("Bearer {}", self.0))
            .expect("a token holds visible ASCII only");
        value.set_sensitive(true);
        value
    }

    /// Whether `candidate` is this token, in a time that does not depend on
    /// where they differ (it may on their lengths).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }

    /// Whether `headers` carry `Authorization: Bearer <t>` for one of
    /// `accepted`. Every accepted token is compared, so the time does not
    /// tell which one came close.
    pub fn authorizes(accepted: &[ServiceToken], headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
        else {
            return false;
        };
        accepted
            .iter()
            .fold(false, |found, token| token.matches(presented) | found)
    }
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(value[SCHEME.len()..].trim_ascii())
}

impl FromStr for ServiceToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ServiceToken::new(text)
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn a_token_is_visible_ascii_without_blanks() {
        assert_eq!(ServiceToken::new("abc=\n").unwrap().expose(), "abc=");
        assert_eq!(ServiceToken::new(" \n"), Err(TokenError::Empty));
        assert_eq!(ServiceToken::new("a b"), Err(TokenError::Unprintable));
        assert_eq!(ServiceToken::new("é"), Err(TokenError::Unprintable));
    }

    #[test]
    fn it_never_prints_itself() {
        let token = ServiceToken::new("s3cret").unwrap();
        assert_eq!(format!("{token:?} {token}"), "*** ***");
        assert!(token.header_value().is_sensitive());
        assert_eq!(token.header_value(), "Bearer s3cret");
    }

    #[test]
    fn only_a_bearer_of_an_accepted_token_is_authorized() {
        let accepted = [
            ServiceToken::new("old").unwrap(),
            ServiceToken::new("new").unwrap(),
        ];
        for good in ["Bearer old", "Bearer new", "bearer new"] {
            assert!(
                ServiceToken::authorizes(&accepted, &headers(good)),
                "{good}"
            );
        }
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer ne",
            "Bearer newer",
            "Basic new",
            "new",
        ] {
            assert!(!ServiceToken::authorizes(&accepted, &headers(bad)), "{bad}");
        }
        assert!(!ServiceToken::authorizes(&accepted, &HeaderMap::new()));
        assert!(!ServiceToken::authorizes(&[], &headers("Bearer new")));
    }
}
