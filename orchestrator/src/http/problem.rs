//! Every error the API returns is `application/problem+json` (RFC 9457), built here and nowhere
//! else: domain errors through `From<Error>`, and the framework's own (malformed JSON, a bad
//! path parameter, an unknown route, an oversized body) through [`from_poem`].
//!
//! Each operation declares the statuses its handler can answer with, as a set in its type
//! ([`ApiResult<T, { NOT_FOUND | CONFLICT }>`](ApiResult)), so the spec lists exactly those. The
//! statuses of the layers before the handler (400 for unreadable input, 401, 403, 413, 415,
//! 429) are added to every operation they apply to by `http::spec`.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{
    ApiResponse, Object,
    error::{ParseParamError, ParsePathError},
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::{Example, ToJSON, Type},
};

use super::example;
use crate::error::{Error, Shortage};

/// An error, as RFC 9457 describes it.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct ProblemDetails {
    /// A URI naming the kind of problem; `about:blank` means the status says it all.
    #[oai(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    pub status: u16,
    /// What went wrong in this case, and what to do about it.
    pub detail: String,
}

impl Example for ProblemDetails {
    fn example() -> Self {
        details(StatusCode::NOT_FOUND, format!("store {} not found", example::STORE))
    }
}

/// The conflict of an operation that reserves stock: a problem that lists what is short.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct ShortStockProblem {
    #[oai(flatten)]
    pub problem: ProblemDetails,
    /// Each item the store cannot cover; absent on a 409 for another conflict.
    #[oai(skip_serializing_if_is_none)]
    pub short_items: Option<Vec<Shortage>>,
}

impl Example for ShortStockProblem {
    fn example() -> Self {
        Problem::from(Error::ShortStock(vec![Shortage::example()])).into_short_stock()
    }
}

/// One error answer, whatever its status.
#[derive(Clone, Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub details: ProblemDetails,
    /// For short stock: each item the store cannot cover.
    pub short_items: Option<Vec<Shortage>>,
}

pub fn details(status: StatusCode, detail: impl Into<String>) -> ProblemDetails {
    ProblemDetails {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail: detail.into(),
    }
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self { status, details: details(status, detail), short_items: None }
    }

    fn into_short_stock(self) -> ShortStockProblem {
        ShortStockProblem { problem: self.details, short_items: self.short_items }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status;
        let json = match self.short_items {
            Some(_) => self.into_short_stock().to_json(),
            None => self.details.to_json(),
        };
        let body = serde_json::to_string(&json).unwrap_or_else(|_| "{}".to_owned());
        Response::builder().status(status).content_type(PROBLEM_JSON).body(body)
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

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
                let mut problem = Self::conflict(format!("not enough stock, nothing was reserved; short: {list}"));
                problem.short_items = Some(shortages);
                problem
            }
            Error::Database(error) => database(&error),
        }
    }
}

/// What a client is told of a database error: a 503 to retry when the database is unreachable,
/// busy or restarting, a 4xx for a value or a rule it refused, a 500 for the rest. The details
/// are logged, never sent.
fn database(error: &sqlx::Error) -> Problem {
    let class = match error {
        sqlx::Error::Database(db) => db.code().map(|code| code.chars().take(2).collect::<String>()),
        _ => None,
    };
    if platform::db::unavailable(error) {
        tracing::warn!(%error, "database unavailable while serving a request");
        Problem::unavailable("the database is unavailable or busy; retry shortly")
    } else if class.as_deref() == Some("22") {
        // A value the database cannot store: the request's validation should have refused it.
        tracing::error!(%error, "a value reached the database that it refused");
        Problem::unprocessable("a value in the request cannot be stored")
    } else if class.as_deref() == Some("23") {
        // A rule of the schema that no domain check names: still the request's conflict.
        tracing::error!(%error, "a request broke a database rule no check maps");
        Problem::conflict("the request conflicts with the stored data")
    } else {
        tracing::error!(%error, "database error while serving a request");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "an internal error occurred; it has been logged")
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        Error::Database(error).into()
    }
}

/// The statuses an operation's handler may answer with besides its success, as a set of bits.
pub type Statuses = u8;
/// Something the request names does not exist.
pub const NOT_FOUND: Statuses = 1;
/// The request conflicts with the current state.
pub const CONFLICT: Statuses = 2;
/// The request is well-formed, but its values are refused.
pub const UNPROCESSABLE: Statuses = 4;
/// The database is unavailable or busy.
pub const UNAVAILABLE: Statuses = 8;
/// Its conflict may be short stock, listed item by item (with [`CONFLICT`]).
pub const SHORT_STOCK: Statuses = 16;

const STATUSES: [(Statuses, u16, &str); 4] = [
    (NOT_FOUND, 404, "Something the request names does not exist."),
    (CONFLICT, 409, "The request conflicts with the current state."),
    (UNPROCESSABLE, 422, "The request is well-formed, but its values are refused."),
    (UNAVAILABLE, 503, "The database is unavailable or busy: retry shortly."),
];

/// A handler's error, typed by the set `S` of statuses it may have, which is what the spec lists.
#[derive(Debug)]
pub struct Errors<const S: Statuses>(pub Problem);

pub type ApiResult<T, const S: Statuses> = Result<T, Errors<S>>;

impl<const S: Statuses> Errors<S> {
    /// Whether `status` is one this set lists, or one every operation may answer (400).
    fn lists(status: StatusCode) -> bool {
        status == StatusCode::BAD_REQUEST || STATUSES.iter().any(|(bit, code, _)| S & bit != 0 && status == *code)
    }
}

impl<const S: Statuses> From<Problem> for Errors<S> {
    fn from(problem: Problem) -> Self {
        if !Self::lists(problem.status) {
            // The spec does not list this status for the operation: a bug, caught by the spec
            // fuzzer in CI, and loud here.
            tracing::error!(
                status = problem.status.as_u16(),
                detail = problem.details.detail,
                "an operation answered a status its spec does not list"
            );
            debug_assert!(false, "status {} is not in this operation's spec", problem.status);
        }
        Self(problem)
    }
}

impl<const S: Statuses> From<Error> for Errors<S> {
    fn from(error: Error) -> Self {
        Problem::from(error).into()
    }
}

impl<const S: Statuses> From<sqlx::Error> for Errors<S> {
    fn from(error: sqlx::Error) -> Self {
        Problem::from(error).into()
    }
}

impl<const S: Statuses> IntoResponse for Errors<S> {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl<const S: Statuses> From<Errors<S>> for poem::Error {
    fn from(errors: Errors<S>) -> Self {
        poem::Error::from_response(errors.into_response())
    }
}

impl<const S: Statuses> ApiResponse for Errors<S> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: STATUSES
                .iter()
                .filter(|(bit, ..)| S & bit != 0)
                .map(|&(_, status, description)| {
                    let schema = if status == 409 && S & SHORT_STOCK != 0 {
                        ShortStockProblem::schema_ref()
                    } else {
                        ProblemDetails::schema_ref()
                    };
                    MetaResponse {
                        description,
                        status: Some(status),
                        status_range: None,
                        content: vec![MetaMediaType { content_type: PROBLEM_JSON, schema }],
                        headers: vec![],
                    }
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ProblemDetails::register(registry);
        if S & SHORT_STOCK != 0 {
            ShortStockProblem::register(registry);
        }
    }
}

/// The framework's errors as problems. poem-openapi reports unreadable input as 400 with a
/// plain-text body; this keeps its status and gives it the problem shape, and a parameter it could
/// not read is named as the spec names it: `route` is the operation's path in the spec's form
/// (`/orders/{id}`), when one was matched, since the framework knows path parameters only by
/// their place (`param0`).
pub async fn from_poem(error: poem::Error, route: Option<&str>) -> Response {
    // Our own problems arrive already shaped; only the framework's errors need dressing.
    if error.is_from_response() {
        return error.into_response();
    }
    let status = error.status();
    let detail = if status.is_server_error() {
        tracing::error!(%error, "request failed");
        "an internal error occurred; it has been logged".to_owned()
    } else if let Some(ParsePathError { name, reason }) = error.downcast_ref::<ParsePathError>() {
        let name = route.and_then(|route| path_parameter(route, name)).unwrap_or(name);
        format!("path parameter `{name}` {}", plain(reason))
    } else if let Some(ParseParamError { name, reason }) = error.downcast_ref::<ParseParamError>() {
        format!("parameter `{name}` {}", plain(reason))
    } else {
        error.to_string()
    };
    Problem::new(status, detail).into_response()
}

/// The name of the framework's `paramN`: the Nth `{name}` of the spec's path.
fn path_parameter<'a>(route: &'a str, place: &str) -> Option<&'a str> {
    let index: usize = place.strip_prefix("param")?.parse().ok()?;
    route.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}')).nth(index)
}

/// The framework's reason for a value it could not read, in the API's words: without the names of
/// its own types (`failed to parse "string_uuid": …`, `(occurred while parsing "optional_integer")`),
/// and with what a valid value looks like where the reason is the standard library's.
fn plain(reason: &str) -> String {
    let reason = reason.split(" (occurred while parsing").next().unwrap_or(reason);
    let Some((kind, message)) = reason.strip_prefix("failed to parse \"").and_then(|rest| rest.split_once("\": "))
    else {
        return reason.to_owned();
    };
    match kind {
        // The API's own types say what they take.
        _ if message.starts_with("must ") => message.to_owned(),
        "string_uuid" => "must be an id, such as 00000000-0000-0000-0000-000000000000".to_owned(),
        kind if kind.starts_with("integer") => "must be a whole number, such as 42".to_owned(),
        "boolean" => "must be true or false".to_owned(),
        _ => message.to_owned(),
    }
}
