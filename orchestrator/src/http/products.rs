//! `/products`: the catalogue, one row per SKU.

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
    input::{Id, Line, Optional},
    page::{self, Limit, page_of},
    problem::{ApiResult, CONFLICT, NOT_FOUND, Problem, UNAVAILABLE},
};
use crate::{
    Context,
    access::audit::Audit,
    error::{Error, OnConstraint},
};

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct Product {
    pub id: Uuid,
    /// Stock-keeping unit, unique across the catalogue.
    pub sku: String,
    pub name: String,
    /// What one unit costs, in cents.
    pub price_cents: i64,
    pub created_at: DateTime<Utc>,
}

impl Example for Product {
    fn example() -> Self {
        Self {
            id: example::PRODUCT,
            sku: example::SKU.into(),
            name: example::PRODUCT_NAME.into(),
            price_cents: example::PRICE_CENTS,
            created_at: example::at(1),
        }
    }
}

/// A unit's price when a new product names none: 1.00.
const DEFAULT_PRICE_CENTS: i64 = 100;

#[derive(Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct NewProduct {
    pub sku: Line<64>,
    pub name: Line<200>,
    /// What one unit costs, in cents (default 100). Orders keep the price they were placed at.
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000")))]
    pub price_cents: Optional<i64>,
}

impl Example for NewProduct {
    fn example() -> Self {
        Self {
            sku: Line::example(example::SKU),
            name: Line::example(example::PRODUCT_NAME),
            price_cents: Optional(Some(example::PRICE_CENTS)),
        }
    }
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
    #[oai(path = "/products", method = "post", operation_id = "createProduct")]
    async fn create(
        &self,
        _role: Needs<Operator>,
        body: Json<NewProduct>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Created, { CONFLICT | UNAVAILABLE }> {
        let (sku, name) = (&*body.sku, &*body.name);
        let mut tx = self.ctx.pool.begin().await?;
        let product = sqlx::query_as!(
            Product,
            "INSERT INTO product (sku, name, price_cents) VALUES ($1, $2, $3)
             RETURNING id, sku, name, price_cents, created_at",
            sku,
            name,
            body.price_cents.0.unwrap_or(DEFAULT_PRICE_CENTS)
        )
        .fetch_one(&mut *tx)
        .await
        .on_constraint(|c| {
            (c == "product_sku_key").then(|| Error::Conflict(format!("a product with sku {sku:?} already exists")))
        })?;
        audit.name("product_id", product.id);
        audit.record(&mut tx, 201).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(product)))
    }

    /// List products
    #[oai(path = "/products", method = "get", operation_id = "listProducts")]
    async fn list(
        &self,
        _role: Needs<Client>,
        limit: Query<Option<Limit>>,
        /// A page's next_cursor.
        cursor: Query<Option<Id>>,
        #[oai(name = "Consistency-Token")] lag: MayLag,
    ) -> ApiResult<Json<ProductPage>, UNAVAILABLE> {
        let fetch = page::fetch_limit(limit.0);
        let after = cursor.0.map_or(Uuid::nil(), Uuid::from);
        let rows = lag
            .run(&self.ctx.reads, "listProducts", |pool| async move {
                sqlx::query_as!(
                    Product,
                    "SELECT id, sku, name, price_cents, created_at FROM product WHERE id > $1 ORDER BY id LIMIT $2",
                    after,
                    fetch
                )
                .fetch_all(&pool)
                .await
            })
            .await?;
        let (items, next_cursor) = page::split(rows, fetch, |p| p.id.to_string());
        Ok(Json(ProductPage { items, next_cursor }))
    }

    /// Get a product
    #[oai(path = "/products/:id", method = "get", operation_id = "getProduct")]
    async fn get(
        &self,
        _role: Needs<Client>,
        id: Path<Id>,
        #[oai(name = "Consistency-Token")] lag: MayLag,
    ) -> ApiResult<Json<Product>, { NOT_FOUND | UNAVAILABLE }> {
        let id = *id.0;
        let product = lag
            .run(&self.ctx.reads, "getProduct", |pool| async move {
                sqlx::query_as!(Product, "SELECT id, sku, name, price_cents, created_at FROM product WHERE id = $1", id)
                    .fetch_optional(&pool)
                    .await
            })
            .await?
            .ok_or_else(|| Problem::not_found(format!("no product {id}")))?;
        Ok(Json(product))
    }
}
