//! `/api-keys`: making, listing and revoking the keys that open the API.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, param::Query, payload::Json, types::Example};
use uuid::Uuid;

use super::role::{Admin, Needs};
use super::{
    Tag,
    input::{Handle, Id, Text},
    page::{self, Limit, page_of},
    problem::{ApiResult, CONFLICT, NOT_FOUND, Problem, UNAVAILABLE},
};
use crate::{
    Context,
    access::{
        Role,
        audit::Audit,
        keys::{self, ApiKey, RELOAD_EVERY},
    },
};

/// A key just made: the only answer that carries its secret.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct CreatedKey {
    #[oai(flatten)]
    pub key: ApiKey,
    /// The secret, to send as `Authorization: Bearer <key>`. It is not stored and is never
    /// shown again.
    #[oai(rename = "key")]
    pub secret: String,
}

impl Example for CreatedKey {
    fn example() -> Self {
        Self { key: ApiKey::example(), secret: "dsk_Hq3Zt9kLw2N8vR5xB7cD1fG4hJ6mP0sT3uV9yA2eK5n".into() }
    }
}

#[derive(Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct NewKey {
    /// Who will hold it, e.g. `ann` or `picker-app-soho`; unique among keys in use.
    pub name: Text<Handle, 64>,
    pub role: Role,
}

impl Example for NewKey {
    fn example() -> Self {
        Self { name: Text::example("picker-app"), role: Role::Client }
    }
}

page_of!(ApiKeyPage, ApiKey);

#[derive(ApiResponse)]
enum Created {
    /// Made; the secret is in `key`, shown this once.
    #[oai(status = 201)]
    Key(Json<CreatedKey>),
}

#[derive(ApiResponse)]
enum Revoked {
    /// Revoked (or it was already).
    #[oai(status = 204)]
    Gone,
}

pub struct ApiKeysApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Keys")]
impl ApiKeysApi {
    /// Make an API key
    ///
    /// Answers with the key's secret, which is shown this once: only its hash is stored. The key
    /// works on every instance within a second. 409 when a key in use has that name.
    #[oai(path = "/api-keys", method = "post", operation_id = "createApiKey")]
    async fn create(
        &self,
        _role: Needs<Admin>,
        body: Json<NewKey>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Created, { CONFLICT | UNAVAILABLE }> {
        let mut tx = self.ctx.pool.begin().await?;
        let made = keys::create(&mut tx, &body.name, body.role, Some(audit.caller.key_id)).await?;
        audit.name("api_key_id", made.record.id);
        audit.record(&mut tx, 201).await?;
        tx.commit().await?;
        // This instance knows the key at once; the others at their next reload.
        if let Err(error) = self.ctx.keys.reload(&self.ctx.pool).await {
            tracing::warn!(%error, "keys not reloaded after making one; the next reload will");
        }
        Ok(Created::Key(Json(CreatedKey { key: made.record, secret: made.secret })))
    }

    /// List API keys
    ///
    /// Every key, revoked ones included, without secrets.
    #[oai(path = "/api-keys", method = "get", operation_id = "listApiKeys")]
    async fn list(
        &self,
        _role: Needs<Admin>,
        limit: Query<Option<Limit>>,
        /// A page's next_cursor.
        cursor: Query<Option<Id>>,
    ) -> ApiResult<Json<ApiKeyPage>, UNAVAILABLE> {
        let fetch = page::fetch_limit(limit.0);
        let mut conn = self.ctx.pool.acquire().await?;
        let rows = keys::list(&mut conn, cursor.0.map_or(Uuid::nil(), Uuid::from), fetch).await?;
        let (items, next_cursor) = page::split(rows, fetch, |k| k.id.to_string());
        Ok(Json(ApiKeyPage { items, next_cursor }))
    }

    /// Revoke an API key
    ///
    /// It stops working on this instance at once and on every other within a second (at most
    /// five, when an instance cannot reach the database). Revoking a revoked key changes
    /// nothing. 409 for the key making the request, and for the last admin key in use: make
    /// another admin key first.
    #[oai(path = "/api-keys/:id", method = "delete", operation_id = "revokeApiKey")]
    async fn revoke(
        &self,
        _role: Needs<Admin>,
        id: Path<Id>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Revoked, { NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        if *id.0 == audit.caller.key_id {
            return Err(Problem::conflict("a key cannot revoke itself; use another admin key").into());
        }
        let mut tx = self.ctx.pool.begin().await?;
        keys::revoke(&mut tx, *id.0, audit.caller.key_id).await?;
        audit.record(&mut tx, 204).await?;
        tx.commit().await?;
        self.ctx.keys.forget(*id.0);
        tracing::info!(api_key_id = %*id.0, by = audit.caller.name, "API key revoked; other instances follow within {} s", RELOAD_EVERY.as_secs());
        Ok(Revoked::Gone)
    }
}
