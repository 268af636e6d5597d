//! Keyset pagination shared by every list: `limit` (default 50, at most 500) and an opaque
//! `cursor` taken from the previous page's `next_cursor`.

/// Rows per page unless the client asks otherwise.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// The page size to query: one more than asked, to learn whether another page follows.
pub fn fetch_limit(limit: Option<u32>) -> Result<i64, super::problem::Problem> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(super::problem::Problem::unprocessable("limit must be at least 1")),
        n if n > MAX_LIMIT => Err(super::problem::Problem::unprocessable(format!("limit must be at most {MAX_LIMIT}"))),
        n => Ok(i64::from(n) + 1),
    }
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

/// Refuses a time range whose start (`from_name`) is after its end (`to_name`).
pub fn check_range<T: PartialOrd>(
    (from_name, from): (&str, Option<T>),
    (to_name, to): (&str, Option<T>),
) -> Result<(), super::problem::Problem> {
    match (from, to) {
        (Some(from), Some(to)) if from > to => {
            Err(super::problem::Problem::unprocessable(format!("{from_name} must not be after {to_name}")))
        }
        _ => Ok(()),
    }
}

/// Declares the page type of a list: its items and the cursor of the next page.
macro_rules! page_of {
    ($page:ident, $item:ty) => {
        #[derive(Debug, poem_openapi::Object)]
        pub struct $page {
            pub items: Vec<$item>,
            /// Pass as `cursor` to get the next page; absent on the last page.
            #[oai(skip_serializing_if_is_none)]
            pub next_cursor: Option<String>,
        }
    };
}
pub(crate) use page_of;
