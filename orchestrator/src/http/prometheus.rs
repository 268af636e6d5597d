//! `/metrics`: Prometheus text, in the spec like every other route.

use metrics_exporter_prometheus::PrometheusHandle;
use poem_openapi::{OpenApi, payload::PlainText};

use super::Tag;
use super::role::{Needs, Operator};
use crate::Context;

pub struct MetricsApi {
    pub ctx: Context,
    pub handle: PrometheusHandle,
}

#[OpenApi(tag = "Tag::Metrics")]
impl MetricsApi {
    /// Prometheus metrics
    ///
    /// The text exposition format. Figures that live in the database (sagas by state, the outbox
    /// backlog, dead letters waiting) are read at each scrape, so every instance reports the same
    /// truth; the rest count what this process did. docs/operations.md lists every metric.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, _role: Needs<Operator>) -> PlainText<String> {
        if let Err(error) = crate::observe::record_database_gauges(&self.ctx).await {
            tracing::warn!(%error, "database gauges not refreshed for this scrape");
        }
        PlainText(self.handle.render())
    }
}
