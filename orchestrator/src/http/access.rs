//! The API's door: the layer every request passes before its handler ([`Door::guard`]), guarding
//! each operation as its handler declares ([`super::role`]).
//!
//! In order, a request is: matched to its operation; authenticated by its bearer key, if it
//! sends one; charged a token from its key's bucket, or its client address's when it has no
//! valid key (every request is charged, refused ones too). Then it is answered:
//! - 401 when the operation needs a key and none was sent, whatever the budget: retrying cannot
//!   change that answer, and a 429 would hide what is missing;
//! - 429 when the bucket is empty, or when its client (behind a trusted proxy) has its cap of
//!   requests in flight;
//! - 405 with `Allow` when the path has no operation of that method (a CORS preflight passes to
//!   CORS instead, when configured);
//! - 401 for a key that is not valid, 403 when the key's role is below the operation's;
//! - 400 for a query parameter the operation does not take, a body it does not take, or a body
//!   that repeats a key within one object; its body is read within a size and a time limit (413,
//!   408);
//! - and its handler's answer, or a 503 when the handler runs past the request timeout.
//!
//! A change requested by a known key leaves an audit row, and so does any request of a known
//! key the door refuses for what it asked (403, 405).
//! The door's own refusals are marked ([`Refused`]) so that they are counted, not logged one by one.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use poem::{
    Endpoint, IntoResponse, Request, Response,
    error::ReadBodyError,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
};
use serde_json::{Map, Value};
use sqlx::PgPool;

use platform::config::ApiConfig;

use super::{problem::Problem, role::Access, server::OverClientCap};
use crate::access::{
    Caller, Role,
    audit::Audit,
    client::{ClientAddr, TrustedProxies},
    keys::KeyRing,
    limit::{Bucket, Decision, Limiter},
};

use Access::{Needs, Public};

/// Routes outside the spec, also public: Swagger UI, the spec itself, and the icon a browser asks
/// for on its own.
pub const DOCUMENTS: &[&str] = &["/docs", "/docs/", "/openapi.json", FAVICON];

/// What a browser asks for with every page it opens: answered 204, and logged at debug only.
pub const FAVICON: &str = "/favicon.ico";

/// Every operation of `spec` (the finished OpenAPI document) with who may call it, as its handler
/// declares ([`super::role`]): (method, path, access).
///
/// # Panics
/// When an operation declares no role: no operation is left unguarded by accident.
pub fn operations(spec: &Value) -> Vec<(String, String, Access)> {
    let mut operations = Vec::new();
    for (path, item) in spec["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            let method = method.to_uppercase();
            let access = operation["x-role"].as_str().and_then(Access::parse).unwrap_or_else(|| {
                panic!("{method} {path} declares no role: give its handler a `_: Needs<…>` parameter")
            });
            operations.push((method, path.clone(), access));
        }
    }
    operations
}

/// Requests to a keyed operation without a valid key: none presented, or one that is not valid.
fn rejection_counter(invalid: bool) -> metrics::Counter {
    metrics::counter!("api_key_rejections_total", "reason" => if invalid { "invalid" } else { "missing" })
}

/// Registers both rejection counters at zero: a dashboard then shows none as 0, not as nothing.
pub fn register_metrics() {
    for invalid in [false, true] {
        rejection_counter(invalid).increment(0);
    }
}

/// Largest request body accepted: orders of 100 items are far smaller.
pub const MAX_BODY: usize = 256 * 1024;

/// The operation a request was matched to, as metrics label it: a pattern of the spec, so that
/// answers the door gave itself (401, 403, 429) are labelled like those the handler gave.
#[derive(Clone, Debug)]
pub struct RouteLabel(pub Arc<str>);

/// An operation as the door knows it: its access, and what the spec says it takes.
#[derive(Clone, Debug)]
pub struct Route {
    pub method: Method,
    /// In the spec's form: `/orders/{id}`.
    pub path: Arc<str>,
    pub access: Access,
    /// The query parameters it takes.
    pub query: BTreeSet<String>,
    /// Whether it takes a request body.
    pub body: bool,
}

/// What the door needs to admit requests.
#[derive(Clone, Debug)]
pub struct Door {
    routes: Arc<Vec<Route>>,
    keys: KeyRing,
    limiter: Limiter,
    pool: PgPool,
    trusted: TrustedProxies,
    read_timeout: Duration,
    request_timeout: Duration,
    /// Whether CORS is configured: then preflights pass to it.
    cors: bool,
}

/// A path matched against a route's pattern: its parameters, by name.
fn matches(pattern: &str, path: &str) -> Option<Map<String, Value>> {
    let mut params = Map::new();
    let (mut pattern, mut path) = (pattern.split('/'), path.split('/'));
    loop {
        match (pattern.next(), path.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(segment)) if p.starts_with('{') && p.ends_with('}') && !segment.is_empty() => {
                params.insert(p[1..p.len() - 1].to_owned(), Value::String(segment.to_owned()));
            }
            (Some(p), Some(segment)) if p == segment => {}
            _ => return None,
        }
    }
}

/// What a key presented in `Authorization` turned out to be.
enum Presented {
    Nothing,
    Valid(Arc<Caller>),
    /// Malformed, unknown or revoked: the answer does not say which.
    Invalid,
}

/// What a request asks for, as the door sees it.
enum Target<'a> {
    /// An operation of the spec, with its path parameters.
    Operation(&'a Route, Map<String, Value>),
    /// A known path, but none of its operations has this method.
    WrongMethod(Vec<&'a Route>),
    /// Swagger UI, the spec, or a path the router will not find: public.
    Elsewhere,
}

/// Marks an answer the door (or the router, for an unknown path) gave without any handler: it is
/// counted and summed up in the log, not logged on its own ([`refused`](super::refused)).
#[derive(Clone, Copy, Debug)]
pub struct Refused(pub Option<ClientAddr>);

impl Door {
    /// The door for the operations of `spec` (the finished OpenAPI document), each guarded as its
    /// handler declares ([`operations`]).
    pub fn new(spec: &Value, keys: KeyRing, limiter: Limiter, pool: PgPool, api: &ApiConfig) -> Self {
        let mut routes = Vec::new();
        for (method, path, access) in operations(spec) {
            let operation = &spec["paths"][&path][method.to_lowercase()];
            let query = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            routes.push(Route {
                method: method.parse().expect("the spec's methods are HTTP methods"),
                body: operation.get("requestBody").is_some(),
                path: path.into(),
                access,
                query,
            });
        }
        Self {
            routes: Arc::new(routes),
            keys,
            limiter,
            pool,
            trusted: TrustedProxies::new(api.trusted_proxies.clone()),
            read_timeout: api.read_timeout,
            request_timeout: api.request_timeout,
            cors: !api.cors_origins.is_empty(),
        }
    }

    /// Admits, refuses or limits one request; see the module's documentation.
    pub async fn guard<E: Endpoint>(&self, next: &E, request: Request) -> poem::Result<Response> {
        let client = request
            .remote_addr()
            .as_socket_addr()
            .map(|peer| ClientAddr::of(self.trusted.client(peer.ip(), request.headers()).0));
        let path = request.uri().path().to_owned();
        let target = if DOCUMENTS.contains(&path.as_str()) {
            Target::Elsewhere
        } else {
            let candidates: Vec<(&Route, Map<String, Value>)> =
                self.routes.iter().filter_map(|r| matches(&r.path, &path).map(|params| (r, params))).collect();
            match candidates.iter().position(|(r, _)| r.method == request.method()) {
                Some(found) => {
                    let (route, params) = candidates.into_iter().nth(found).expect("found above");
                    Target::Operation(route, params)
                }
                None if candidates.is_empty() => Target::Elsewhere,
                None => Target::WrongMethod(candidates.into_iter().map(|(r, _)| r).collect()),
            }
        };
        let label = match &target {
            Target::Operation(route, _) => Some(route.path.clone()),
            Target::WrongMethod(routes) => Some(routes[0].path.clone()),
            Target::Elsewhere => None,
        };
        let mut response = self.admit(next, request, target, client).await;
        if let Some(label) = label {
            response.set_data(RouteLabel(label));
        }
        Ok(response)
    }

    /// The door for one request: in order, who it is, its budget, what it may do, what it sent.
    async fn admit<E: Endpoint>(
        &self,
        next: &E,
        mut request: Request,
        target: Target<'_>,
        client: Option<ClientAddr>,
    ) -> Response {
        let access = match &target {
            Target::Operation(route, _) => route.access,
            Target::WrongMethod(_) | Target::Elsewhere => Public,
        };
        let refuse = |response: Response| refused(response, client);
        let presented = match self.presented(request.headers()) {
            Ok(presented) => presented,
            Err(problem) if access == Public => {
                tracing::debug!(detail = problem.details.detail, "keys unverifiable; a public route goes on");
                Presented::Nothing
            }
            Err(problem) => return refuse(problem.into_response()),
        };
        let caller = match &presented {
            Presented::Valid(caller) => Some(caller.clone()),
            _ => None,
        };
        // Every request is charged, to its key's bucket or to its address's.
        let bucket = caller.as_ref().map_or_else(|| Bucket::address(client), |c| Bucket::Key(c.key_id));
        let decision = self.limiter.take(&bucket, caller.as_ref().map(|c| c.role)).await;
        let limited = |response: Response| refuse(with_rate_limit(response, &decision));
        // A request without any key for an operation that needs one gets the 401 whatever its
        // budget: retrying it cannot change the answer, and a 429 would hide what is missing.
        if let Needs(role) = access
            && matches!(presented, Presented::Nothing)
        {
            rejection_counter(false).increment(1);
            return limited(unauthorized(role, false));
        }
        if !decision.allowed {
            return limited(too_many_requests(&decision));
        }
        if let Some(OverClientCap(cap)) = request.data::<OverClientCap>().copied() {
            return limited(too_many_in_flight(cap));
        }
        let (request_id, trace_id) = super::request_ids(&request);
        let method = super::method_label(request.method());
        let audit_of = |caller: &Arc<Caller>, route: &Arc<str>, params: &Map<String, Value>| {
            let (method, request_id, trace_id) = (method.to_owned(), request_id.clone(), trace_id.clone());
            Arc::new(Audit::new(caller.clone(), method, route.clone(), params.clone(), request_id, trace_id))
        };
        let (route, params) = match target {
            Target::Operation(route, params) => (route, params),
            // CORS answers its preflight (or refuses its origin): no key is sent with one.
            Target::WrongMethod(_) if self.cors && is_preflight(&request) => {
                return with_rate_limit(call(next, request, None).await, &decision);
            }
            Target::WrongMethod(routes) => {
                if let Some(caller) = &caller {
                    audit_of(caller, &routes[0].path, &Map::new()).finish(&self.pool, 405).await;
                }
                return limited(method_not_allowed(&routes));
            }
            Target::Elsewhere => {
                let response = call(next, request, None).await;
                // The router's 404 for a path no operation has is a refusal like the door's.
                let response = if response.status() == StatusCode::NOT_FOUND { refuse(response) } else { response };
                return with_rate_limit(response, &decision);
            }
        };
        let refusal = match (route.access, &caller) {
            (Needs(role), None) => {
                rejection_counter(true).increment(1);
                return limited(unauthorized(role, true));
            }
            (Needs(role), Some(caller)) if caller.role < role => {
                // An attempt beyond the key's role is on record, reads included.
                audit_of(caller, &route.path, &params).finish(&self.pool, StatusCode::FORBIDDEN.as_u16()).await;
                return limited(forbidden(role, caller).into_response());
            }
            _ => self.check_input(route, &mut request).await.err(),
        };
        // Every change a known key asks for is on record, whatever its outcome.
        let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
        let mut audit = caller.as_ref().filter(|_| changes).map(|c| audit_of(c, &route.path, &params));
        let mut timed_out = false;
        let response = match refusal {
            Some(problem) => refuse(problem.into_response()),
            None => {
                if let Some(audit) = &audit {
                    request.set_data(audit.clone());
                }
                // Who asks, for the layers inside (read-after-write follows the key).
                if let Some(caller) = &caller {
                    request.set_data(caller.clone());
                }
                let response =
                    match tokio::time::timeout(self.request_timeout, call(next, request, Some(&route.path))).await {
                        Ok(response) => response,
                        Err(_) => {
                            timed_out = true;
                            self.timed_out()
                        }
                    };
                // No handler answers 403: this is CORS refusing the page's origin.
                if response.status() == StatusCode::FORBIDDEN {
                    audit = audit.or_else(|| caller.as_ref().map(|c| audit_of(c, &route.path, &params)));
                    refuse(response)
                } else {
                    response
                }
            }
        };
        match audit {
            // The database is likely what made it late: its row is written once it answers,
            // rather than holding the answer for as long again.
            Some(audit) if timed_out => {
                let (pool, status) = (self.pool.clone(), response.status().as_u16());
                tokio::spawn(async move { audit.finish(&pool, status).await });
            }
            Some(audit) => audit.finish(&self.pool, response.status().as_u16()).await,
            None => {}
        }
        with_rate_limit(response, &decision)
    }

    /// The answer to a request whose handler ran past the request timeout: dropped where it
    /// waited, its transaction rolled back.
    fn timed_out(&self) -> Response {
        metrics::counter!("http_request_timeouts_total").increment(1);
        tracing::warn!(limit_ms = self.request_timeout.as_millis() as u64, "a request ran out of time; abandoned");
        Problem::unavailable(format!(
            "the request did not finish within {} ms and was abandoned; what it started was rolled back unless \
             its commit was already under way, so retry it (an order with its Idempotency-Key)",
            self.request_timeout.as_millis()
        ))
        .into_response()
    }

    fn presented(&self, headers: &HeaderMap) -> Result<Presented, Problem> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Ok(if headers.contains_key(header::AUTHORIZATION) {
                Presented::Invalid
            } else {
                Presented::Nothing
            });
        };
        let Some(secret) = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim())
            .filter(|s| platform::config::valid_secret(s))
        else {
            return Ok(Presented::Invalid);
        };
        match self.keys.find(secret) {
            Ok(Some(caller)) => Ok(Presented::Valid(caller)),
            Ok(None) => Ok(Presented::Invalid),
            Err(untrusted) => {
                // The reload loop logs the outage; each request refused for it is only counted.
                tracing::debug!(%untrusted, "a keyed request refused: keys cannot be verified");
                Err(Problem::unavailable("API keys cannot be verified right now; retry shortly"))
            }
        }
    }

    /// Refuses query parameters the operation does not take (or takes once, sent twice), a body
    /// it does not take, and a body too large or too slow; reads the body otherwise.
    async fn check_input(&self, route: &Route, request: &mut Request) -> Result<(), Problem> {
        let mut seen = BTreeSet::new();
        for (name, _) in form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes()) {
            if !route.query.contains(name.as_ref()) {
                let takes = if route.query.is_empty() {
                    "none".to_owned()
                } else {
                    route.query.iter().cloned().collect::<Vec<_>>().join(", ")
                };
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {name:?}; this operation takes {takes}"
                )));
            }
            if !seen.insert(name.clone().into_owned()) {
                return Err(Problem::bad_request(format!("query parameter {name:?} is sent more than once")));
            }
        }
        let declared = match request.headers().get(header::CONTENT_LENGTH) {
            Some(length) => Some(
                length
                    .to_str()
                    .ok()
                    .and_then(|l| l.parse::<u64>().ok())
                    .ok_or_else(|| Problem::bad_request("Content-Length is not a number"))?,
            ),
            None => None,
        };
        let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
        if !route.body {
            // Framing says whether a body follows; a body built in process (tests) says it itself.
            return if declared.unwrap_or(0) > 0 || chunked || (declared.is_none() && !request.take_body().is_empty()) {
                Err(Problem::bad_request("this operation takes no request body"))
            } else {
                Ok(())
            };
        }
        if declared.is_some_and(|length| length > MAX_BODY as u64) {
            return Err(too_large());
        }
        let body = request.take_body();
        match tokio::time::timeout(self.read_timeout, body.into_bytes_limit(MAX_BODY)).await {
            Err(_) => Err(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} ms", self.read_timeout.as_millis()),
            )),
            Ok(Err(ReadBodyError::PayloadTooLarge)) => Err(too_large()),
            Ok(Err(error)) => Err(Problem::bad_request(format!("the request body could not be read: {error}"))),
            Ok(Ok(bytes)) => {
                if let Some(repeated) = super::input::repeated_key(&bytes) {
                    return Err(Problem::bad_request(format!(
                        "the body repeats the key {repeated} within one object; send each key once"
                    )));
                }
                request.set_body(bytes);
                Ok(())
            }
        }
    }
}

/// The answer of the routes behind the door, the framework's errors shaped as problems.
/// `route` is the operation matched, in the spec's form, so that a parameter the framework could
/// not read is named as the spec names it.
async fn call<E: Endpoint>(next: &E, request: Request, route: Option<&str>) -> Response {
    match next.call(request).await {
        Ok(response) => response.into_response(),
        Err(error) => super::problem::from_poem(error, route).await,
    }
}

fn too_large() -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {MAX_BODY} bytes"))
}

/// `response`, marked as the door's own refusal of a request from `client`.
fn refused(mut response: Response, client: Option<ClientAddr>) -> Response {
    response.set_data(Refused(client));
    response
}

/// A CORS preflight: an `OPTIONS` naming the method the page wants to send.
fn is_preflight(request: &Request) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// 429 for a client, behind a trusted proxy, with its cap of requests in flight.
fn too_many_in_flight(cap: usize) -> Response {
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "this client already has {cap} requests in flight, the most one client may              (HTTP_MAX_CONNECTIONS_PER_CLIENT); retry once one has been answered"
        ),
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `RateLimit-*` on every answer a bucket decided, so that clients can pace themselves.
fn with_rate_limit(mut response: Response, decision: &Decision) -> Response {
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(decision.reset_secs));
    response
}

fn too_many_requests(decision: &Decision) -> Response {
    let problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "over this caller's budget of {} requests at once; retry after {} s",
            decision.limit, decision.retry_after_secs
        ),
    );
    let mut response = problem.into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(decision.retry_after_secs));
    response
}

/// 401, the same whether the key was missing, unknown or revoked, with `WWW-Authenticate`
/// (RFC 6750) telling a client that sent a key that it is not valid.
fn unauthorized(role: Role, invalid: bool) -> Response {
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "this operation needs an API key with the role {} or higher, sent as 'Authorization: Bearer <key>'",
            role.as_ref()
        ),
    )
    .into_response();
    let realm = "Bearer realm=\"darkstores\"";
    let value = if invalid { format!("{realm}, error=\"invalid_token\"") } else { realm.to_owned() };
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn forbidden(role: Role, caller: &Caller) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        format!(
            "this operation needs the role {} or higher; this key's role is {}",
            role.as_ref(),
            caller.role.as_ref()
        ),
    )
}

/// 405, with the methods the path has in `Allow`.
fn method_not_allowed(candidates: &[&Route]) -> Response {
    let allowed: BTreeSet<&str> = candidates.iter().map(|r| r.method.as_str()).collect();
    let allow = allowed.into_iter().collect::<Vec<_>>().join(", ");
    let mut response = Problem::new(StatusCode::METHOD_NOT_ALLOWED, format!("this path takes {allow}")).into_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments() {
        let params = matches("/orders/{id}/cancel", "/orders/42/cancel").unwrap();
        assert_eq!(params["id"], "42");
        assert!(matches("/orders/{id}", "/orders/").is_none());
        assert!(matches("/orders/{id}", "/orders/1/cancel").is_none());
        assert!(matches("/stores", "/stores/").is_none());
        assert!(matches("/sagas/stats", "/sagas/stats").unwrap().is_empty());
    }

    #[test]
    #[should_panic(expected = "GET /loose declares no role")]
    fn an_operation_that_declares_no_role_is_refused() {
        operations(&serde_json::json!({ "paths": { "/loose": { "get": {} } } }));
    }
}
