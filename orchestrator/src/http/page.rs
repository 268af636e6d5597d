//! Keyset pagination shared by every list: `limit` (default 50, 1 to 500) and an opaque `cursor`
//! taken from the previous page's `next_cursor`.

use poem_openapi::{
    registry::MetaSchema,
    types::{ParseError, ParseFromParameter, ParseResult},
};

use super::input::scalar_type;

/// Rows per page unless the client asks otherwise.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// Rows per page, as asked: 1 to [`MAX_LIMIT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub u32);

scalar_type!(
    Limit,
    u32,
    MetaSchema {
        description: Some("Rows per page."),
        minimum: Some(1.0),
        maximum: Some(f64::from(MAX_LIMIT)),
        default: Some(DEFAULT_LIMIT.into()),
        ..MetaSchema::new_with_format("integer", "int32")
    }
);

impl ParseFromParameter for Limit {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        match value.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Self(n)),
            _ => Err(ParseError::custom(format!("must be a whole number from 1 to {MAX_LIMIT}"))),
        }
    }
}

/// The cursor of lists ordered by a numeric id: the last id of the previous page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdCursor(pub i64);

scalar_type!(
    IdCursor,
    i64,
    MetaSchema {
        description: Some("A page's next_cursor."),
        pattern: Some("^[0-9]{1,18}$".to_owned()),
        ..MetaSchema::new("string")
    }
);

impl ParseFromParameter for IdCursor {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        match value.parse::<i64>() {
            Ok(n) if n >= 0 && value.len() <= 18 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(Self(n)),
            _ => Err(ParseError::custom("is not a cursor this API issued; pass a page's next_cursor back unchanged")),
        }
    }
}

/// The page size to query: one more than asked, to learn whether another page follows.
pub fn fetch_limit(limit: Option<Limit>) -> i64 {
    i64::from(limit.map_or(DEFAULT_LIMIT, |l| l.0)) + 1
}

/// Trims the extra row and returns the cursor of the next page, if there is one.
pub fn split<T>(mut rows: Vec<T>, fetched: i64, cursor_of: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(fetched - 1).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(cursor_of);
        (rows, next)
    } else {
        (rows, None)
    }
}

/// Declares the page type of a list: its items and the cursor of the next page.
macro_rules! page_of {
    ($page:ident, $item:ty) => {
        #[derive(Debug, poem_openapi::Object)]
        #[oai(example)]
        pub struct $page {
            pub items: Vec<$item>,
            /// Pass as `cursor` to get the next page; absent on the last page.
            #[oai(skip_serializing_if_is_none)]
            pub next_cursor: Option<String>,
        }

        impl poem_openapi::types::Example for $page {
            fn example() -> Self {
                Self { items: vec![<$item as poem_openapi::types::Example>::example()], next_cursor: None }
            }
        }
    };
}
pub(crate) use page_of;
