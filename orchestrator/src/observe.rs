//! Prometheus metrics: the process-wide recorder, the series registered at start-up, and the
//! gauges read from the database at each scrape. Counters and histograms are recorded where things
//! happen (the relay, consumers, the engine, the cache, the HTTP layer); README.md lists them all.

use std::{collections::HashMap, sync::OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use platform::{
    messaging::outbox,
    saga::{engine, registry::Registry, store},
};

use crate::{Context, access::limit, dead_letters, http, orders};

/// Buckets of every `*_seconds` histogram: from a millisecond (an HTTP read) to minutes (a saga
/// step waiting out its resends).
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// The process-wide Prometheus recorder (metrics are global in the `metrics` crate).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("the buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// Installs the recorder, then registers at zero every counter whose labels come from a known,
/// bounded set (the kinds, the roles, the cache's outcomes...), so that a dashboard shows 0 from
/// the first scrape rather than nothing. Series labelled by what traffic brings (HTTP routes and
/// statuses, the steps sagas take) appear with their first event.
pub fn register_known_series(registry: &Registry) {
    metrics_handle();
    engine::register_metrics(&registry.kinds());
    limit::register_metrics();
    http::access::register_metrics();
    stock::cache::register_metrics();
    dead_letters::register_metrics();
    orders::register_metrics();
}

/// Sets the gauges whose truth is in the database: sagas by kind and state, the stuck ones by
/// kind, the outbox backlog and the age of its oldest row, and dead letters not yet replayed.
/// Every state of every registered kind is set, at zero when no saga is in it: a state that
/// empties must not keep its last count.
pub async fn record_database_gauges(ctx: &Context) -> sqlx::Result<()> {
    let mut conn = ctx.pool.acquire().await?;
    let mut by_state: HashMap<(String, String), i64> =
        store::count_by_state(&mut conn).await?.into_iter().map(|c| ((c.kind, c.state), c.count)).collect();
    let mut stuck: HashMap<String, i64> = store::count_stuck_by_kind(&mut conn).await?.into_iter().collect();
    for (kind, states) in ctx.registry.kinds_and_states() {
        for state in states {
            let count = by_state.remove(&(kind.to_owned(), state.to_owned())).unwrap_or(0);
            metrics::gauge!("sagas", "kind" => kind, "state" => state).set(count as f64);
        }
        metrics::gauge!("sagas_stuck", "kind" => kind).set(stuck.remove(kind).unwrap_or(0) as f64);
    }
    // Rows of kinds or states this build does not know are still reported.
    for ((kind, state), count) in by_state {
        metrics::gauge!("sagas", "kind" => kind, "state" => state).set(count as f64);
    }
    for (kind, count) in stuck {
        metrics::gauge!("sagas_stuck", "kind" => kind).set(count as f64);
    }
    let (waiting, oldest) = outbox::backlog(&mut conn).await?;
    metrics::gauge!("outbox_backlog").set(waiting as f64);
    metrics::gauge!("outbox_oldest_age_seconds").set(oldest);
    metrics::gauge!("dead_letters_waiting").set(dead_letters::waiting(&mut conn).await? as f64);
    Ok(())
}
