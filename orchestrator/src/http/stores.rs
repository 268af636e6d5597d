//! `/stores`: the dark stores.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, param::Query, payload::Json, types::Example};
use uuid::Uuid;

use super::example;
use super::role::{Client, Needs, Operator};
use super::{
    Tag,
    consistency::MayLag,
    input::{Id, Line},
    page::{self, Limit, page_of},
    problem::{ApiResult, NOT_FOUND, Problem, UNAVAILABLE},
};
use crate::{Context, access::audit::Audit};

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct Store {
    pub id: Uuid,
    pub name: String,
    /// The area the store delivers to, e.g. a district or postcode list.
    pub service_area: String,
    pub created_at: DateTime<Utc>,
}

impl Example for Store {
    fn example() -> Self {
        Self {
            id: example::STORE,
            name: example::STORE_NAME.into(),
            service_area: example::SERVICE_AREA.into(),
            created_at: example::at(0),
        }
    }
}

#[derive(Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct NewStore {
    pub name: Line<200>,
    pub service_area: Line<200>,
}

impl Example for NewStore {
    fn example() -> Self {
        Self { name: Line::example(example::STORE_NAME), service_area: Line::example(example::SERVICE_AREA) }
    }
}

page_of!(StorePage, Store);

#[derive(ApiResponse)]
pub enum Created {
    /// The store was created.
    #[oai(status = 201)]
    Created(Json<Store>),
}

pub struct StoresApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Stores")]
impl StoresApi {
    /// Create a store
    #[oai(path = "/stores", method = "post", operation_id = "createStore")]
    async fn create(
        &self,
        _role: Needs<Operator>,
        body: Json<NewStore>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Created, UNAVAILABLE> {
        let mut tx = self.ctx.pool.begin().await?;
        let store = sqlx::query_as!(
            Store,
            "INSERT INTO store (name, service_area) VALUES ($1, $2) RETURNING id, name, service_area, created_at",
            &*body.name,
            &*body.service_area
        )
        .fetch_one(&mut *tx)
        .await?;
        audit.name("store_id", store.id);
        audit.record(&mut tx, 201).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(store)))
    }

    /// List stores
    #[oai(path = "/stores", method = "get", operation_id = "listStores")]
    async fn list(
        &self,
        _role: Needs<Client>,
        limit: Query<Option<Limit>>,
        cursor: Query<Option<Id>>,
        #[oai(name = "Consistency-Token")] lag: MayLag,
    ) -> ApiResult<Json<StorePage>, UNAVAILABLE> {
        let fetch = page::fetch_limit(limit.0);
        let after = cursor.0.map_or(Uuid::nil(), Uuid::from);
        let rows = lag
            .run(&self.ctx.reads, "listStores", |pool| async move {
                sqlx::query_as!(
                    Store,
                    "SELECT id, name, service_area, created_at FROM store WHERE id > $1 ORDER BY id LIMIT $2",
                    after,
                    fetch
                )
                .fetch_all(&pool)
                .await
            })
            .await?;
        let (items, next_cursor) = page::split(rows, fetch, |s| s.id.to_string());
        Ok(Json(StorePage { items, next_cursor }))
    }

    /// Get a store
    #[oai(path = "/stores/:id", method = "get", operation_id = "getStore")]
    async fn get(
        &self,
        _role: Needs<Client>,
        id: Path<Id>,
        #[oai(name = "Consistency-Token")] lag: MayLag,
    ) -> ApiResult<Json<Store>, { NOT_FOUND | UNAVAILABLE }> {
        let id = *id.0;
        let store = lag
            .run(&self.ctx.reads, "getStore", |pool| async move {
                sqlx::query_as!(Store, "SELECT id, name, service_area, created_at FROM store WHERE id = $1", id)
                    .fetch_optional(&pool)
                    .await
            })
            .await?
            .ok_or_else(|| Problem::not_found(format!("no store {id}")))?;
        Ok(Json(store))
    }
}
