//! Every error the API returns is `application/problem+json` (RFC 9457), built here and nowhere
//! else: domain errors through `From<Error>`, and the framework's own (malformed JSON, a bad
//! path parameter, an unknown route, an oversized body) through [`from_poem`].

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{ApiResponse, Object, payload::Json};
use uuid::Uuid;

use crate::error::{Error, Shortage};

/// An error, as RFC 9457 describes it.
#[derive(Clone, Debug, Object)]
pub struct ProblemDetails {
    /// A URI naming the kind of problem; `about:blank` means the status says it all.
    #[oai(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    pub status: u16,
    /// What went wrong in this case, and what to do about it.
    pub detail: String,
    /// With a 409 for short stock: each item the store cannot cover.
    #[oai(skip_serializing_if_is_none)]
    pub short_items: Option<Vec<ShortItem>>,
}

/// An order item the store cannot cover.
#[derive(Clone, Debug, Object)]
pub struct ShortItem {
    pub product_id: Uuid,
    pub requested: i64,
    pub available: i64,
}

#[derive(Debug, ApiResponse)]
pub enum Problem {
    /// The request could not be read.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<ProblemDetails>),
    /// Something named in the request does not exist.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
    /// The request conflicts with the current state (not enough stock, illegal status change).
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<ProblemDetails>),
    /// The request is well-formed but its values are not acceptable.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<ProblemDetails>),
    /// A fault on our side; the details are in the server log, not here.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<ProblemDetails>),
    /// The database is unreachable or every connection is busy: retry shortly.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<ProblemDetails>),
}

pub type ApiResult<T> = Result<T, Problem>;

pub fn details(status: StatusCode, detail: impl Into<String>) -> ProblemDetails {
    ProblemDetails {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail: detail.into(),
        short_items: None,
    }
}

impl Problem {
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(Json(details(StatusCode::NOT_FOUND, detail)))
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict(Json(details(StatusCode::CONFLICT, detail)))
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::Unprocessable(Json(details(StatusCode::UNPROCESSABLE_ENTITY, detail)))
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::NotFound(detail) => Self::not_found(detail),
            Error::Conflict(detail) => Self::conflict(detail),
            Error::Invalid(detail) => Self::unprocessable(detail),
            Error::ShortStock(shortages) => {
                let list = shortages
                    .iter()
                    .map(|s| format!("{} (requested {}, available {})", s.product_id, s.requested, s.available))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut body =
                    details(StatusCode::CONFLICT, format!("not enough stock, nothing was reserved; short: {list}"));
                body.short_items = Some(shortages.into_iter().map(ShortItem::from).collect());
                Self::Conflict(Json(body))
            }
            Error::Database(error) if unavailable(&error) => {
                tracing::warn!(%error, "database unavailable while serving a request");
                Self::Unavailable(Json(details(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable or busy; retry shortly",
                )))
            }
            Error::Database(error) => {
                tracing::error!(%error, "database error while serving a request");
                Self::Internal(Json(details(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "an internal error occurred; it has been logged",
                )))
            }
        }
    }
}

/// Whether the database failed in a way that passes: unreachable, out of connections, or
/// restarting (SQLSTATE class 57P: shut down by an administrator, starting up; class 08: the
/// connection was lost). The client should retry rather than report a fault.
fn unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
        _ => false,
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        Error::Database(error).into()
    }
}

impl From<Shortage> for ShortItem {
    fn from(s: Shortage) -> Self {
        Self { product_id: s.product_id, requested: s.requested, available: s.available }
    }
}

/// The framework's errors as problems. poem-openapi reports unreadable input as 400 with a
/// plain-text body; this keeps its status and message and gives it the problem shape.
pub async fn from_poem(error: poem::Error) -> Response {
    // Our own problems arrive already shaped; only the framework's errors need dressing.
    if error.is_from_response() {
        return error.into_response();
    }
    let status = error.status();
    let detail = if status.is_server_error() {
        tracing::error!(%error, "request failed");
        "an internal error occurred; it has been logged".to_owned()
    } else {
        error.to_string()
    };
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    Response::builder().status(status).content_type("application/problem+json").body(body.to_string()).into_response()
}
