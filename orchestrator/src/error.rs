//! The domain's errors. The HTTP layer maps each variant to one status in one place
//! (`http::problem`); database details are logged there, never sent.

use poem_openapi::types::Example;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    /// The request is understood but conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong, whatever the state.
    #[error("{0}")]
    Invalid(String),
    #[error("not enough stock for {} item(s)", .0.len())]
    ShortStock(Vec<Shortage>),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

// The API lists them with its 409, under the name its clients know.
/// An order item the store cannot cover.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, poem_openapi::Object)]
#[oai(example)]
#[oai(rename = "ShortItem")]
pub struct Shortage {
    pub product_id: Uuid,
    pub requested: i64,
    pub available: i64,
}

impl Example for Shortage {
    fn example() -> Self {
        // The walk's order of 6, placed when only 4 are available.
        Self { product_id: crate::http::example::PRODUCT, requested: 6, available: 4 }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns a violated constraint into the domain error it stands for; other database errors pass
/// through as [`Error::Database`]. Constraint names are the contract between schema and code.
pub trait OnConstraint<T> {
    fn on_constraint(self, map: impl FnOnce(&str) -> Option<Error>) -> Result<T>;
}

impl<T> OnConstraint<T> for Result<T, sqlx::Error> {
    fn on_constraint(self, map: impl FnOnce(&str) -> Option<Error>) -> Result<T> {
        self.map_err(|error| {
            if let sqlx::Error::Database(db) = &error
                && let Some(mapped) = db.constraint().and_then(map)
            {
                return mapped;
            }
            Error::Database(error)
        })
    }
}
