//! `/audit`: who changed what through the API, newest first.

use chrono::{DateTime, Utc};
use poem_openapi::{OpenApi, param::Query, payload::Json};
use uuid::Uuid;

use super::role::{Admin, Needs};
use super::{
    Tag,
    consistency::MayLag,
    input::{Id, Line},
    page::{self, IdCursor, Limit, page_of},
    problem::{ApiResult, UNAVAILABLE},
};
use crate::{
    Context,
    access::audit::{self, AuditEntry, Filter},
};

page_of!(AuditPage, AuditEntry);

pub struct AuditApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Audit")]
impl AuditApi {
    /// Read the audit trail
    ///
    /// Newest first. Every change requested through the API by any key, whatever its outcome
    /// (refusals included), and every request a key's role did not allow. Filters combine; a
    /// time range that ends before it starts holds nothing.
    #[oai(path = "/audit", method = "get", operation_id = "listAudit")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        _role: Needs<Admin>,
        key_id: Query<Option<Id>>,
        /// A path pattern as the spec writes it, e.g. `/orders/{id}/cancel`.
        route: Query<Option<Line<200>>>,
        #[oai(validator(minimum(value = "100"), maximum(value = "599")))] status: Query<Option<u16>>,
        /// At or after this instant.
        from: Query<Option<DateTime<Utc>>>,
        /// Before this instant.
        to: Query<Option<DateTime<Utc>>>,
        limit: Query<Option<Limit>>,
        cursor: Query<Option<IdCursor>>,
        #[oai(name = "Consistency-Token")] lag: MayLag,
    ) -> ApiResult<Json<AuditPage>, UNAVAILABLE> {
        let fetch = page::fetch_limit(limit.0);
        let filter = Filter {
            before: cursor.0.map(|c| c.0),
            key_id: key_id.0.map(Uuid::from),
            route: route.0.map(|r| r.into_inner()),
            status: status.0,
            from: from.0,
            to: to.0,
        };
        let rows = lag
            .run(&self.ctx.reads, "listAudit", |pool| {
                let filter = filter.clone();
                async move { audit::list(&mut *pool.acquire().await?, &filter, fetch).await }
            })
            .await?;
        let (items, next_cursor) = page::split(rows, fetch, |r| r.id.to_string());
        Ok(Json(AuditPage { items, next_cursor }))
    }
}
