//! Purchase orders started by hand, through the API: an operator orders a product for the
//! warehouse from its supplier, whatever the warehouse's stock.

use platform::saga::Actor;
use sagas::purchase_order;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::{
    Context,
    access::audit::Audit,
    error::{Error, OnConstraint, Result},
    inventory::{check_quantity, commit_started},
};

/// Starts a purchase order by hand, whatever the warehouse's stock, on behalf of the key in
/// `audit`, in a transaction of its own on `conn`.
pub async fn start(
    ctx: &Context,
    conn: &mut PgConnection,
    audit: &Audit,
    product_id: Uuid,
    quantity: i64,
    reason: Option<&str>,
) -> Result<Uuid> {
    check_quantity("quantity", quantity, 1)?;
    let mut tx = conn.begin().await?;
    let detail = json!({ "quantity": quantity, "reason": reason.unwrap_or_default() });
    let actor = audit.actor();
    let opened = purchase_order::open(&mut tx, &ctx.timing, product_id, quantity, Actor::Caller(&actor), detail)
        .await
        .on_constraint(|c| {
            (c == "purchase_order_product_id_fkey").then(|| Error::NotFound("no such product".into()))
        })?;
    let Some(saga_id) = opened else {
        let open = purchase_order::open_for(&mut tx, product_id).await?;
        let open = open.map_or_else(String::new, |id| format!(" (saga {id})"));
        return Err(Error::Conflict(format!("a purchase order of this product is already open{open}")));
    };
    commit_started(ctx, tx, audit, saga_id).await
}
