//! `/stores`: the dark stores.

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, param::Query, payload::Json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Tag,
    page::{self, page_of},
    problem::{ApiResult, Problem},
    uuid_cursor,
};
use crate::Context;

#[derive(Clone, Debug, Object)]
pub struct Store {
    pub id: Uuid,
    pub name: String,
    /// The area the store delivers to, e.g. a district or postcode list.
    pub service_area: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct NewStore {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    #[oai(validator(min_length = 1, max_length = 200))]
    pub service_area: String,
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
    #[oai(path = "/stores", method = "post")]
    async fn create(&self, body: Json<NewStore>) -> ApiResult<Created> {
        let mut conn = self.ctx.pool.acquire().await?;
        let store = insert(&mut conn, body.name.trim(), body.service_area.trim()).await?;
        Ok(Created::Created(Json(store)))
    }

    /// List stores
    #[oai(path = "/stores", method = "get")]
    async fn list(&self, limit: Query<Option<u32>>, cursor: Query<Option<String>>) -> ApiResult<Json<StorePage>> {
        let fetch = page::fetch_limit(limit.0)?;
        let after = uuid_cursor(cursor.0.as_deref())?;
        let rows = sqlx::query_as!(
            Store,
            "SELECT id, name, service_area, created_at FROM store WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            fetch
        )
        .fetch_all(&self.ctx.pool)
        .await?;
        let (items, next_cursor) = page::split(rows, fetch, |s| s.id.to_string());
        Ok(Json(StorePage { items, next_cursor }))
    }

    /// Get a store
    #[oai(path = "/stores/:id", method = "get")]
    async fn get(&self, id: Path<Uuid>) -> ApiResult<Json<Store>> {
        let store = sqlx::query_as!(Store, "SELECT id, name, service_area, created_at FROM store WHERE id = $1", id.0)
            .fetch_optional(&self.ctx.pool)
            .await?
            .ok_or_else(|| Problem::not_found(format!("no store {}", id.0)))?;
        Ok(Json(store))
    }
}

async fn insert(conn: &mut PgConnection, name: &str, service_area: &str) -> ApiResult<Store> {
    if name.is_empty() || service_area.is_empty() {
        return Err(Problem::unprocessable("name and service_area must not be blank"));
    }
    Ok(sqlx::query_as!(
        Store,
        "INSERT INTO store (name, service_area) VALUES ($1, $2) RETURNING id, name, service_area, created_at",
        name,
        service_area
    )
    .fetch_one(conn)
    .await?)
}
