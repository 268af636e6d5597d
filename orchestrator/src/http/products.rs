//! `/products`: the catalogue, one row per SKU.

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, param::Query, payload::Json};
use uuid::Uuid;

use super::{
    Tag,
    page::{self, page_of},
    problem::{ApiResult, Problem},
    uuid_cursor,
};
use crate::{
    Context,
    error::{Error, on_constraint},
};

#[derive(Clone, Debug, Object)]
pub struct Product {
    pub id: Uuid,
    /// Stock-keeping unit, unique across the catalogue.
    pub sku: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct NewProduct {
    #[oai(validator(min_length = 1, max_length = 64))]
    pub sku: String,
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
}

page_of!(ProductPage, Product);

#[derive(ApiResponse)]
pub enum Created {
    /// The product was created.
    #[oai(status = 201)]
    Created(Json<Product>),
}

pub struct ProductsApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Products")]
impl ProductsApi {
    /// Create a product
    ///
    /// A SKU already in the catalogue is a 409.
    #[oai(path = "/products", method = "post")]
    async fn create(&self, body: Json<NewProduct>) -> ApiResult<Created> {
        let (sku, name) = (body.sku.trim(), body.name.trim());
        if sku.is_empty() || name.is_empty() {
            return Err(Problem::unprocessable("sku and name must not be blank"));
        }
        let product = sqlx::query_as!(
            Product,
            "INSERT INTO product (sku, name) VALUES ($1, $2) RETURNING id, sku, name, created_at",
            sku,
            name
        )
        .fetch_one(&self.ctx.pool)
        .await
        .map_err(|e| {
            on_constraint(e, |c| {
                (c == "product_sku_key").then(|| Error::Conflict(format!("a product with sku {sku:?} already exists")))
            })
        })?;
        Ok(Created::Created(Json(product)))
    }

    /// List products
    #[oai(path = "/products", method = "get")]
    async fn list(&self, limit: Query<Option<u32>>, cursor: Query<Option<String>>) -> ApiResult<Json<ProductPage>> {
        let fetch = page::fetch_limit(limit.0)?;
        let after = uuid_cursor(cursor.0.as_deref())?;
        let rows = sqlx::query_as!(
            Product,
            "SELECT id, sku, name, created_at FROM product WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            fetch
        )
        .fetch_all(&self.ctx.pool)
        .await?;
        let (items, next_cursor) = page::split(rows, fetch, |p| p.id.to_string());
        Ok(Json(ProductPage { items, next_cursor }))
    }

    /// Get a product
    #[oai(path = "/products/:id", method = "get")]
    async fn get(&self, id: Path<Uuid>) -> ApiResult<Json<Product>> {
        let product = sqlx::query_as!(Product, "SELECT id, sku, name, created_at FROM product WHERE id = $1", id.0)
            .fetch_optional(&self.ctx.pool)
            .await?
            .ok_or_else(|| Problem::not_found(format!("no product {}", id.0)))?;
        Ok(Json(product))
    }
}
