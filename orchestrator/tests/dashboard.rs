//! The operators' Grafana dashboard (`docs/dashboards/operators.json`) against a running
//! instance: every metric a panel or a template variable queries is in `/metrics`, with the labels
//! the query matches on or groups by, so that renaming a metric or a label cannot leave a panel
//! silently blank.
//!
//! Metrics are global to a process, so only one test here starts the application: nothing another
//! test records can make it pass.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use orchestrator::app::Roles;
use platform::messaging::relay::RelayFaults;
use poem::http::StatusCode;
use promql_parser::{
    label::MatchOp,
    parser::{self, Expr, VectorMatchCardinality, VectorSelector},
};
use serde_json::{Value, json};
use support::{ADMIN_KEY, Client, TestEnv, client, eventually, stocked_store};

const DASHBOARD: &str = include_str!("../../docs/dashboards/operators.json");

/// Labels Prometheus attaches to every series it scrapes, so never in `/metrics` itself.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// The series only traffic brings, labelled by HTTP route and status, by the steps sagas take, or
/// by the read operation.
/// Every other series a panel reads is registered at start-up.
const FED_BY_TRAFFIC: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "saga_transitions_total",
    "saga_step_seconds_bucket",
    "db_reads_total",
];

#[tokio::test]
async fn every_series_a_panel_reads_is_in_metrics_with_the_labels_it_uses() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let needs = dashboard_needs(&dashboard);
    let env = TestEnv::new().await;
    // No engine and no workers: a saga stays where it is put, so the saga gauges have known values.
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);

    // At start-up, before any work, only what traffic labels may be missing.
    let first = samples(&scrape(&api).await);
    let blank: BTreeSet<&str> = missing(&needs, &first).into_iter().map(|(metric, _)| metric).collect();
    assert!(blank.iter().all(|metric| FED_BY_TRAFFIC.contains(metric)), "blank at start-up: {blank:?}");
    for (kind, states) in sagas::registry().kinds_and_states() {
        for state in states {
            assert_eq!(value(&first, "sagas", &[("kind", kind), ("state", state)]), Some(0.0), "{kind} {state}");
        }
        assert_eq!(value(&first, "sagas_stuck", &[("kind", kind)]), Some(0.0), "{kind}");
    }

    // An operator starts a replenishment; with no engine to resend, its deadline passes: stuck.
    let (store_id, product_id) = stocked_store(&api).await;
    api.get("/stores").send().await.assert_status_is_ok();
    let start = json!({"store_id": store_id, "product_id": product_id, "quantity": 5, "reason": "dashboard"});
    let started = api.post("/replenishments").body_json(&start).send().await;
    started.assert_status(StatusCode::CREATED);
    let started: Value = started.0.into_body().into_json().await.unwrap();
    let id = started["id"].as_str().unwrap();
    let stuck = eventually(Duration::from_secs(10), "the replenishment counted as stuck", || async {
        let now = samples(&scrape(&api).await);
        (value(&now, "sagas_stuck", &[("kind", "replenishment")]) == Some(1.0)).then_some(now)
    })
    .await;
    let replenishment = |state: &'static str| [("kind", "replenishment"), ("state", state)];
    assert_eq!(value(&stuck, "sagas", &replenishment("requested")), Some(1.0));

    // Compensated, it leaves `requested`, which then reads 0 rather than its last count.
    let reason = json!({"reason": "dashboard"});
    api.post(format!("/sagas/{id}/compensate")).body_json(&reason).send().await.assert_status_is_ok();
    let last = samples(&scrape(&api).await);
    assert_eq!(value(&last, "sagas", &replenishment("requested")), Some(0.0));
    assert_eq!(value(&last, "sagas", &replenishment("compensating")), Some(1.0));

    // The requests and the saga's start and step have brought the rest: nothing is missing now. A
    // kind's step series appear with its first step, which the replenishment's stand for: a panel
    // may name any registered kind.
    let kinds = sagas::registry().kinds();
    let needs: Vec<Need> = needs
        .into_iter()
        .map(|mut need| {
            if let Some(kind) = need.equal.get_mut("kind").filter(|_| FED_BY_TRAFFIC.contains(&need.metric.as_str())) {
                assert!(kinds.contains(&kind.as_str()), "{}: no kind {kind} is registered", need.origin);
                *kind = "replenishment".to_owned();
            }
            need
        })
        .collect();
    let lacking: Vec<String> = missing(&needs, &last).into_iter().map(|(_, why)| why).collect();
    assert!(lacking.is_empty(), "the dashboard reads what /metrics lacks:\n{}", lacking.join("\n"));
    eprintln!("{} selectors of the dashboard found among {} series of /metrics", needs.len(), last.len());

    app.stop().await;
    env.teardown().await;
}

#[test]
fn the_check_names_each_metric_label_or_value_the_exposition_lacks() {
    let exposition = "# TYPE http_requests_total counter\n\
        http_requests_total{method=\"GET\",route=\"/stores/{id}\",status=\"200\"} 3\n\
        http_requests_total{method=\"GET\",route=\"/say \\\"hi\\\"\",status=\"500\"} 1\n\
        sagas{kind=\"replenishment\",state=\"requested\"} 0\n";
    let samples = samples(exposition);
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].labels["route"], "/stores/{id}");
    assert_eq!(samples[1].labels["route"], "/say \"hi\"");
    assert_eq!(samples[1].value, 1.0);

    let lacking = |needs: Vec<Need>| -> Vec<String> {
        missing(&needs, &samples).into_iter().map(|(metric, _)| metric.to_owned()).collect()
    };
    let check = |expr: &str| lacking(needs(expr, "test"));
    assert!(check(r#"sum by (route, status) (rate(http_requests_total{status=~"5.."}[5m]))"#).is_empty());
    assert!(check(r#"max by (kind, instance) (sagas{state="requested"})"#).is_empty(), "Prometheus adds instance");
    // A metric renamed, a label renamed, a value no series has, `le` on a metric that is no histogram.
    assert_eq!(check("sum(rate(no_such_total[5m])) / sum(rate(http_requests_total[5m]))"), ["no_such_total"]);
    assert_eq!(check("sum by (code) (rate(http_requests_total[5m]))"), ["http_requests_total"]);
    assert_eq!(check(r#"sagas{state="failed"}"#), ["sagas"]);
    assert_eq!(check("histogram_quantile(0.9, sum by (le) (rate(http_requests_total[5m])))"), ["http_requests_total"]);
    // Labels of both sides of a match, and of either side of a vector match.
    assert_eq!(check("sagas + on (route) http_requests_total"), ["sagas"]);

    // Grafana's variables, in panels and in a variable's own query.
    let variables = ["kind".to_owned()];
    assert_eq!(substitute(r#"rate(x{kind=~"$kind"}[$__rate_interval])"#, &variables), r#"rate(x{kind=~".*"}[5m])"#);
    let variable = |query: &str| Query { origin: "variable".into(), expr: query.into(), variable: true };
    assert!(lacking(query_needs(&variable("label_values(sagas, kind)"), &variables)).is_empty());
    assert_eq!(lacking(query_needs(&variable("label_values(sagas, colour)"), &variables)), ["sagas"]);
}

#[test]
fn every_panel_and_variable_asks_the_datasource_the_viewer_picked() {
    // Then the same file serves the provisioned Grafana and any other one it is imported into.
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let queries = queries(&dashboard);
    let panels = panels(&dashboard);
    assert!(panels.iter().all(|p| p["type"] == "row" || p["targets"].as_array().is_some_and(|t| !t.is_empty())));
    let targets: Vec<&Value> = panels.iter().flat_map(|p| p["targets"].as_array().into_iter().flatten()).collect();
    assert_eq!(queries.iter().filter(|q| !q.variable).count(), targets.len());
    let variables: Vec<&Value> = dashboard["templating"]["list"].as_array().unwrap().iter().collect();
    let sources = panels
        .iter()
        .copied()
        .filter(|p| p["type"] != "row")
        .chain(targets.iter().copied())
        .chain(variables.iter().copied().filter(|v| v["type"] == "query"));
    for source in sources {
        assert_eq!(source["datasource"]["uid"], "${datasource}", "{source}");
    }
    assert!(
        variables.iter().any(|v| v["type"] == "datasource" && v["name"] == "datasource" && v["query"] == "prometheus")
    );
}

async fn scrape(api: &Client) -> String {
    let response = api.get("/metrics").send().await;
    response.assert_status_is_ok();
    response.0.into_body().into_string().await.unwrap()
}

/// One sample line of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of an exposition. Each line's series is read as the PromQL selector it is written
/// as (the same quoting), so label values holding braces or quotes are read right.
fn samples(exposition: &str) -> Vec<Sample> {
    let lines = exposition.lines().filter(|line| !line.is_empty() && !line.starts_with('#'));
    lines
        .map(|line| {
            // The value (and a timestamp, if any) follow the series; neither holds a brace.
            let end = line.rfind('}').map_or_else(|| line.find(' ').expect("a value follows the name"), |i| i + 1);
            let (series, rest) = line.split_at(end);
            let Ok(Expr::VectorSelector(selector)) = parser::parse(series) else {
                panic!("{line:?} is not a sample line");
            };
            Sample {
                name: selector.name.expect("a sample has a name"),
                labels: selector.matchers.matchers.into_iter().map(|m| (m.name, m.value)).collect(),
                value: rest.split_whitespace().next().and_then(|v| v.parse().ok()).expect("a numeric value"),
            }
        })
        .collect()
}

/// The value of the sample of `name` with exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    samples.iter().find(|s| s.name == name && s.labels == wanted).map(|s| s.value)
}

/// One query of the dashboard, and where it is.
struct Query {
    origin: String,
    expr: String,
    /// A template variable's query (`label_values(...)`), not PromQL.
    variable: bool,
}

/// Every panel, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let top = dashboard["panels"].as_array().expect("the dashboard has panels");
    top.iter()
        .flat_map(|panel| std::iter::once(panel).chain(panel["panels"].as_array().into_iter().flatten()))
        .collect()
}

/// Every query: each target of each panel, and each query variable.
fn queries(dashboard: &Value) -> Vec<Query> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let origin = format!("panel {}", panel["title"]);
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{origin}: a target without a PromQL expr"));
            queries.push(Query { origin, expr: expr.to_owned(), variable: false });
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten().filter(|v| v["type"] == "query") {
        // A string in older dashboards, an object in newer ones.
        let query = variable["query"].as_str().or_else(|| variable["query"]["query"].as_str());
        let origin = format!("variable {}", variable["name"]);
        let expr = query.unwrap_or_else(|| panic!("{origin} has no query"));
        queries.push(Query { origin, expr: expr.to_owned(), variable: true });
    }
    queries
}

/// The names of the dashboard's own variables.
fn variables(dashboard: &Value) -> Vec<String> {
    let list = dashboard["templating"]["list"].as_array().into_iter().flatten();
    list.map(|v| v["name"].as_str().expect("a variable has a name").to_owned()).collect()
}

fn dashboard_needs(dashboard: &Value) -> Vec<Need> {
    let variables = variables(dashboard);
    let needs: Vec<Need> = queries(dashboard).iter().flat_map(|query| query_needs(query, &variables)).collect();
    assert!(needs.len() >= 20, "only {} selectors found in the dashboard", needs.len());
    needs
}

/// The expression with Grafana's variables replaced so that it parses: the range variables by a
/// duration, the dashboard's own by a regex matching anything (they stand in `=~` matchers).
fn substitute(expr: &str, variables: &[String]) -> String {
    let mut expr =
        ["$__rate_interval", "$__interval", "$__range"].iter().fold(expr.to_owned(), |e, v| e.replace(v, "5m"));
    let mut variables = variables.to_vec();
    // `$kind` must not eat the start of a `$kinds`.
    variables.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for variable in variables {
        expr = expr.replace(&format!("${{{variable}}}"), ".*").replace(&format!("${variable}"), ".*");
    }
    assert!(!expr.contains('$'), "a Grafana variable this check does not know in {expr}");
    expr
}

/// What one selector of a query needs from `/metrics`.
#[derive(Debug)]
struct Need {
    metric: String,
    /// Labels some series must carry: matched on, or grouped or joined by.
    labels: BTreeSet<String>,
    /// `label="value"` matchers that series must also satisfy (an absent label reads as "").
    equal: BTreeMap<String, String>,
    origin: String,
}

fn query_needs(query: &Query, variables: &[String]) -> Vec<Need> {
    let expr = substitute(&query.expr, variables);
    if !query.variable {
        return needs(&expr, &query.origin);
    }
    if let Some(args) = expr.strip_prefix("label_values(").and_then(|rest| rest.strip_suffix(')')) {
        let (selector, label) =
            args.rsplit_once(',').unwrap_or_else(|| panic!("{}: label_values without a metric", query.origin));
        let mut needs = needs(selector, &query.origin);
        for need in &mut needs {
            need.labels.insert(label.trim().to_owned());
        }
        return needs;
    }
    if let Some(inner) = expr.strip_prefix("query_result(").and_then(|rest| rest.strip_suffix(')')) {
        return needs(inner, &query.origin);
    }
    panic!("{}: a variable query this check cannot read: {expr}", query.origin)
}

fn needs(expr: &str, origin: &str) -> Vec<Need> {
    let parsed = parser::parse(expr).unwrap_or_else(|error| panic!("{origin}: {expr} does not parse: {error}"));
    let mut needs = Vec::new();
    walk(&parsed, &BTreeSet::new(), origin, &mut needs);
    needs
}

/// Collects the needs of every selector under `expr`; `grouping` holds the labels the
/// aggregations and vector matches above it name.
fn walk(expr: &Expr, grouping: &BTreeSet<String>, origin: &str, needs: &mut Vec<Need>) {
    let with = |labels: &[String]| -> BTreeSet<String> { grouping.iter().chain(labels).cloned().collect() };
    match expr {
        Expr::Aggregate(aggregate) => {
            if let Some(param) = &aggregate.param {
                walk(param, grouping, origin, needs);
            }
            let grouped = aggregate.modifier.as_ref().map_or(&[][..], |m| &m.labels().labels[..]);
            walk(&aggregate.expr, &with(grouped), origin, needs);
        }
        Expr::Binary(binary) => {
            let mut labels = Vec::new();
            if let Some(modifier) = &binary.modifier {
                labels.extend(modifier.matching.iter().flat_map(|m| m.labels().labels.iter().cloned()));
                if let VectorMatchCardinality::ManyToOne(joined) | VectorMatchCardinality::OneToMany(joined) =
                    &modifier.card
                {
                    labels.extend(joined.labels.iter().cloned());
                }
            }
            let matched = with(&labels);
            walk(&binary.lhs, &matched, origin, needs);
            walk(&binary.rhs, &matched, origin, needs);
        }
        Expr::Paren(paren) => walk(&paren.expr, grouping, origin, needs),
        Expr::Unary(unary) => walk(&unary.expr, grouping, origin, needs),
        Expr::Subquery(subquery) => walk(&subquery.expr, grouping, origin, needs),
        Expr::Call(call) => call.args.args.iter().for_each(|arg| walk(arg, grouping, origin, needs)),
        Expr::VectorSelector(selector) => needs.push(need(selector, grouping, origin)),
        Expr::MatrixSelector(matrix) => needs.push(need(&matrix.vs, grouping, origin)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        Expr::Extension(_) => panic!("{origin}: an extension the parser never makes"),
    }
}

fn need(selector: &VectorSelector, grouping: &BTreeSet<String>, origin: &str) -> Need {
    assert!(selector.matchers.or_matchers.is_empty(), "{origin}: `or` inside a selector is not checked");
    let mut need = Need {
        metric: selector.name.clone().unwrap_or_default(),
        labels: grouping.clone(),
        equal: BTreeMap::new(),
        origin: origin.to_owned(),
    };
    for matcher in &selector.matchers.matchers {
        match (&matcher.op, matcher.name.as_str()) {
            (MatchOp::Equal, "__name__") => need.metric = matcher.value.clone(),
            (MatchOp::Equal, name) => {
                // `label=""` also matches series without the label.
                if !matcher.value.is_empty() {
                    need.labels.insert(name.to_owned());
                }
                need.equal.insert(name.to_owned(), matcher.value.clone());
            }
            (_, name) => {
                need.labels.insert(name.to_owned());
            }
        }
    }
    assert!(!need.metric.is_empty(), "{origin}: a selector without a metric name cannot be checked");
    need.labels.retain(|label| !TARGET_LABELS.contains(&label.as_str()));
    need.equal.retain(|label, _| !TARGET_LABELS.contains(&label.as_str()));
    need
}

/// Each need no sample fulfils: its metric, and why, naming the query.
fn missing<'a>(needs: &'a [Need], samples: &[Sample]) -> Vec<(&'a str, String)> {
    let fulfils = |need: &Need, sample: &Sample| {
        need.labels.iter().all(|label| sample.labels.contains_key(label))
            && need
                .equal
                .iter()
                .all(|(label, value)| sample.labels.get(label).map_or("", String::as_str) == value.as_str())
    };
    needs
        .iter()
        .filter_map(|need| {
            let of_metric: Vec<&Sample> = samples.iter().filter(|s| s.name == need.metric).collect();
            let why = if of_metric.is_empty() {
                format!("{}: no {} in /metrics", need.origin, need.metric)
            } else if of_metric.iter().any(|sample| fulfils(need, sample)) {
                return None;
            } else {
                let carried: BTreeSet<&String> = of_metric.iter().flat_map(|s| s.labels.keys()).collect();
                format!(
                    "{}: no series of {} has the labels {:?} with {:?}; its series carry {:?}",
                    need.origin, need.metric, need.labels, need.equal, carried
                )
            };
            Some((need.metric.as_str(), why))
        })
        .collect()
}
