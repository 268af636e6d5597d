//! The published contract. poem-openapi derives the document from the handlers: their
//! parameters, bodies, the statuses their types list and the role each declares ([`role`]). What
//! the layers before a handler do is added here, so the document says exactly what the server
//! does: the bearer scheme and each operation's role (as `x-role`), and the
//! answers of the door (400, 401, 403, 408, 413, 415, 429, and 503 when keys cannot be
//! verified or a request runs out of time) with their headers. Request bodies refuse unknown fields, so their schemas say
//! `additionalProperties: false`.

use serde_json::{Map, Value, json};

use super::{
    access::MAX_BODY,
    role::{Access, SCHEME_PREFIX},
};

const SCHEME: &str = "bearer";

/// The finished document, from the one poem-openapi generated, its tags listed in `tag_order`
/// (poem-openapi sorts them by name).
pub fn finish(generated: &str, tag_order: &[&str]) -> Value {
    let mut spec: Value = serde_json::from_str(generated).expect("poem-openapi writes JSON");
    if let Some(tags) = spec["tags"].as_array_mut() {
        tags.sort_by_key(|tag| tag_order.iter().position(|name| tag["name"] == *name).unwrap_or(usize::MAX));
    }
    // The roles' placeholder schemes give way to the one bearer scheme every key is sent with.
    spec["components"]["securitySchemes"] = json!({
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key, sent as `Authorization: Bearer <key>`. Each operation's description names \
                            the role it needs; `POST /api-keys` makes keys.",
        }
    });
    link(&mut spec);
    type_nullable_references(&mut spec["components"]["schemas"]);
    let mut request_schemas = Vec::new();
    let paths = spec["paths"].as_object_mut().expect("the document has paths");
    for (path, operations) in paths.iter_mut() {
        for (method, operation) in operations.as_object_mut().expect("a path item is an object") {
            let method = method.to_uppercase();
            let declared: Vec<Access> = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .flat_map(|requirement| requirement.keys())
                .filter_map(|scheme| scheme.strip_prefix(SCHEME_PREFIX).and_then(Access::parse))
                .collect();
            let [access] = declared[..] else {
                panic!("{method} {path} declares {} roles, not one: give its handler one `_: Needs<…>`", declared.len())
            };
            if let Some(content) = operation.pointer("/requestBody/content").and_then(Value::as_object) {
                content.values().for_each(|media| collect_references(media, &mut request_schemas));
            }
            finish_operation(operation.as_object_mut().expect("an operation is an object"), access, method != "GET");
        }
    }
    let schemas = spec["components"]["schemas"].as_object_mut().expect("the document has schemas");
    while let Some(reference) = request_schemas.pop() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let Some(schema) = schemas.get_mut(name) else { continue };
        if schema.get("additionalProperties").is_some() {
            continue;
        }
        schema["additionalProperties"] = Value::Bool(false);
        collect_references(schema, &mut request_schemas);
    }
    spec
}

/// poem-openapi writes a nullable object field as `nullable` beside an `allOf` of its schema and
/// again inside it, each without a `type`, which OpenAPI 3.0 does not allow (`nullable` qualifies
/// a `type`): validators of examples refuse the schema. The field's type is the referenced
/// schema's, an object, and one `nullable` beside it says the rest.
fn type_nullable_references(value: &mut Value) {
    match value {
        Value::Object(schema) => {
            if schema.get("nullable") == Some(&Value::Bool(true))
                && !schema.contains_key("type")
                && let Some(parts) = schema.get_mut("allOf").and_then(Value::as_array_mut)
            {
                for part in parts.iter_mut().filter_map(Value::as_object_mut) {
                    if !part.contains_key("type") && !part.contains_key("$ref") {
                        part.remove("nullable");
                    }
                }
                schema.insert("type".into(), "object".into());
            }
            schema.values_mut().for_each(type_nullable_references);
        }
        Value::Array(items) => items.iter_mut().for_each(type_nullable_references),
        _ => {}
    }
}

/// Where a created resource's id leads: (the creating operation, its status, and the operations,
/// by link name, whose every path parameter is that id). Written as OpenAPI links, which Swagger
/// UI shows and a stateful fuzzer follows. The fulfilment saga of an order has the order's id.
type Link = (&'static str, &'static str, &'static str);
const LINKS: &[(&str, &str, &str, &[Link])] = &[
    (
        "POST",
        "/stores",
        "201",
        &[("GetStore", "GET", "/stores/{id}"), ("ListInventory", "GET", "/stores/{store_id}/inventory")],
    ),
    (
        "POST",
        "/products",
        "201",
        &[
            ("GetProduct", "GET", "/products/{id}"),
            ("SetWarehouseStock", "PUT", "/warehouse/stock/{product_id}"),
            ("GetWarehouseStock", "GET", "/warehouse/stock/{product_id}"),
        ],
    ),
    (
        "POST",
        "/orders",
        "201",
        &[
            ("GetOrder", "GET", "/orders/{id}"),
            ("FulfilOrder", "POST", "/orders/{id}/fulfil"),
            ("CancelOrder", "POST", "/orders/{id}/cancel"),
            ("GetFulfilment", "GET", "/sagas/{id}"),
        ],
    ),
    (
        "POST",
        "/replenishments",
        "201",
        &[
            ("GetSaga", "GET", "/sagas/{id}"),
            ("RetrySaga", "POST", "/sagas/{id}/retry"),
            ("CompensateSaga", "POST", "/sagas/{id}/compensate"),
            ("ResolveSaga", "POST", "/sagas/{id}/resolve"),
        ],
    ),
    ("POST", "/api-keys", "201", &[("RevokeKey", "DELETE", "/api-keys/{id}")]),
];

/// Adds [`LINKS`] to the answers they start from. Panics on a link from or to an operation the
/// document lacks: a renamed path must not leave a dead link.
fn link(spec: &mut Value) {
    for (method, path, status, targets) in LINKS {
        let mut links = Map::new();
        for (name, target_method, target) in *targets {
            let target_method = target_method.to_lowercase();
            assert!(
                spec["paths"][*target][&target_method].is_object(),
                "a link to {target_method} {target}, which is not in the document"
            );
            let parameters: Map<String, Value> = target
                .split('/')
                .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
                .map(|name| (format!("path.{name}"), json!("$response.body#/id")))
                .collect();
            let operation = spec["paths"][*target][&target_method]["operationId"].clone();
            assert!(operation.is_string(), "{target_method} {target} has no operationId to link to");
            links.insert((*name).to_owned(), json!({ "operationId": operation, "parameters": parameters }));
        }
        let response = &mut spec["paths"][*path][method.to_lowercase()]["responses"][*status];
        assert!(response.is_object(), "links from {method} {path} {status}, which is not in the document");
        response["links"] = Value::Object(links);
    }
}

/// The finished document as served at `/openapi.json` and committed in `openapi/`.
pub fn render(spec: &Value) -> String {
    serde_json::to_string_pretty(spec).expect("a JSON value serializes")
}

/// Swagger UI's page, showing `finished` instead of the generated document it embeds.
pub fn swagger_page(html_with_generated: &str, generated: &str, finished: &str) -> String {
    assert!(html_with_generated.contains(generated), "Swagger UI's page embeds the generated document");
    html_with_generated.replacen(generated, finished, 1)
}

fn collect_references(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                into.push(reference.clone());
            }
            map.values().for_each(|v| collect_references(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, into)),
        _ => {}
    }
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/ProblemDetails" } } },
    })
}

/// An example for a problem answer of `status`, so that Swagger UI shows each answer with its own
/// status and the kind of words the server uses for it, not one example for all. The conflict of
/// an operation that reserves stock keeps its schema's example, which lists the short items.
fn give_problem_example(status: &str, response: &mut Value, access: Access) {
    let description = response["description"].as_str().unwrap_or_default().trim_end_matches('.').to_owned();
    let Some(media) = response.pointer_mut("/content/application~1problem+json") else { return };
    if media.get("example").is_some() || media["schema"]["$ref"] != "#/components/schemas/ProblemDetails" {
        return;
    }
    let role = match access {
        Access::Needs(role) => role.as_ref().to_owned(),
        Access::Public => "client".to_owned(),
    };
    let detail = match status {
        "401" => format!(
            "this operation needs an API key with the role {role} or higher, sent as 'Authorization: Bearer <key>'"
        ),
        "403" => format!("this operation needs the role {role} or higher; this key's role is client"),
        "413" => format!("the request body is larger than {MAX_BODY} bytes"),
        "429" => "over this caller's budget of 20 requests at once; retry after 1 s".to_owned(),
        "503" => "the database is unavailable or busy; retry shortly".to_owned(),
        _ => {
            let mut detail = description.split(". ").next().unwrap_or_default().to_owned();
            if let Some(first) = detail.get_mut(..1) {
                first.make_ascii_lowercase();
            }
            detail
        }
    };
    let status = status.parse().ok().and_then(|code| poem::http::StatusCode::from_u16(code).ok());
    let status = status.expect("a response's status is a status code");
    media["example"] = poem_openapi::types::ToJSON::to_json(&super::problem::details(status, detail)).into();
}

fn integer_header(description: &str, required: bool) -> Value {
    json!({ "description": description, "required": required, "schema": { "type": "integer", "format": "int64", "minimum": 0 } })
}

fn rate_limit_headers(required: bool) -> Map<String, Value> {
    let mut headers = Map::new();
    headers.insert("RateLimit-Limit".into(), integer_header("Requests the caller's bucket holds.", required));
    headers.insert("RateLimit-Remaining".into(), integer_header("Requests left in it now.", required));
    headers.insert("RateLimit-Reset".into(), integer_header("Seconds until it is full again.", required));
    headers
}

fn finish_operation(operation: &mut Map<String, Value>, access: Access, write: bool) {
    let taking_body = operation.contains_key("requestBody");
    let who = match access {
        Access::Public => "**Access:** public, no key needed.".to_owned(),
        Access::Needs(role) => format!("**Access:** a key with the role `{}` or higher.", role.as_ref()),
    };
    let description = match operation.get("description").and_then(Value::as_str) {
        Some(text) => format!("{text}\n\n{who}"),
        None => who,
    };
    operation.insert("description".into(), Value::String(description));

    let responses = operation.entry("responses").or_insert_with(|| json!({})).as_object_mut().expect("responses");
    let mut add = |status: &str, response: Value| {
        responses.entry(status.to_owned()).or_insert(response);
    };
    add(
        "400",
        problem(
            "The request could not be read: a parameter or body that breaks the schema, an unknown query \
             parameter, or a body where the operation takes none.",
        ),
    );
    if let Access::Needs(role) = access {
        let mut unauthorized = problem(
            "No valid API key: it is missing, unknown or revoked. A request with no key at all gets this answer \
             whatever its budget (it still counts against its address's); one with a key that is not valid is \
             charged to its address's budget first, so it may get a 429 instead.",
        );
        unauthorized["headers"] = json!({
            "WWW-Authenticate": {
                "description": "`Bearer realm=\"darkstores\"`, with `error=\"invalid_token\"` when a key was sent.",
                "required": true,
                "schema": { "type": "string" },
            }
        });
        add("401", unauthorized);
        if role > crate::access::Role::Client {
            add("403", problem("The key's role is below the one this operation needs."));
        }
    }
    if taking_body {
        add("408", problem("The request body did not arrive in time."));
        add("413", problem(&format!("The request body is larger than {MAX_BODY} bytes.")));
        add("415", problem("The request body is not `application/json`."));
    }
    let mut limited = problem(
        "Over the caller's request budget, or, behind a trusted proxy, its client has its cap of requests in \
         flight: retry after `Retry-After` seconds.",
    );
    let mut headers = rate_limit_headers(true);
    headers.insert("Retry-After".into(), integer_header("Seconds until a request can succeed.", true));
    limited["headers"] = Value::Object(headers);
    add("429", limited);
    // Every operation may run out of time, and a keyed one may meet keys that cannot be verified.
    let unavailable = match access {
        Access::Public => "The request did not finish in time and was abandoned: retry after `Retry-After` seconds.",
        Access::Needs(_) => {
            "API keys cannot be verified now (the database is unreachable), or the request did not finish in \
             time and was abandoned: retry after `Retry-After` seconds."
        }
    };
    add("503", problem(unavailable));
    if let Some(response) = responses.get_mut("503").and_then(Value::as_object_mut) {
        let headers = response.entry("headers").or_insert_with(|| json!({}));
        headers["Retry-After"] = integer_header("Seconds until a retry may succeed.", true);
    }

    for (status, response) in responses.iter_mut() {
        if status != "429" {
            let headers = response
                .as_object_mut()
                .expect("a response is an object")
                .entry("headers")
                .or_insert_with(|| json!({}));
            for (name, header) in rate_limit_headers(false) {
                headers.as_object_mut().expect("headers").entry(name).or_insert(header);
            }
        }
    }
    for (status, response) in responses.iter_mut() {
        give_problem_example(status, response, access);
        if write && status.starts_with('2') {
            let headers = response.as_object_mut().expect("a response").entry("headers").or_insert_with(|| json!({}));
            headers["Consistency-Token"] = json!({
                "description": "Where this write stands in the database's log, when the deployment reads from a \
                                replica: send it back as `Consistency-Token` on a read that must see the write. \
                                Opaque; absent without a replica.",
                "required": false,
                "schema": { "type": "string", "pattern": super::consistency::TOKEN_PATTERN },
            });
        }
    }
    match access {
        Access::Needs(_) => operation.insert("security".into(), json!([{ SCHEME: [] }])),
        Access::Public => operation.remove("security"),
    };
    operation.insert("x-role".into(), Value::String(access.name().to_owned()));
}
