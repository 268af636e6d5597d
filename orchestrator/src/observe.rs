//! Prometheus metrics: the process-wide recorder, and the gauges read from the database at each
//! scrape. Counters and histograms are recorded where things happen (the relay, consumers, the
//! engine, the cache, the HTTP layer), and registered at zero by the application at start-up;
//! docs/operations.md lists them all.

use std::{collections::HashMap, sync::OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use platform::{messaging::outbox, saga::store};

use crate::{Context, dead_letters};

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

/// Sets the gauges whose truth is in the database: sagas by kind and state, the stuck ones by
/// kind, the outbox backlog and the age of its oldest row, and dead letters not yet replayed.
/// Every state of every registered kind is set, at zero when no saga is in it: a state that
/// empties must not keep its last count.
pub async fn record_database_gauges(ctx: &Context) -> sqlx::Result<()> {
    let mut conn = ctx.pool.acquire().await?;
    // Every known series at zero, then the counts found (kinds or states this build does not know
    // included), each gauge set once.
    let mut sagas: HashMap<(String, String), i64> = HashMap::new();
    let mut stuck: HashMap<String, i64> = HashMap::new();
    for (kind, states) in ctx.registry.kinds_and_states() {
        sagas.extend(states.into_iter().map(|state| ((kind.to_owned(), state.to_owned()), 0)));
        stuck.insert(kind.to_owned(), 0);
    }
    sagas.extend(store::count_by_state(&mut conn).await?.into_iter().map(|c| ((c.kind, c.state), c.count)));
    stuck.extend(store::count_stuck_by_kind(&mut conn).await?);
    for ((kind, state), count) in sagas {
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
