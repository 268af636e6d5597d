//! What each saga kind brings to the fault suite, each from its own file here: how it prepares
//! the shop, the stock it holds or moves across the network's edge by its own records, and the
//! checks on those records. The generic checks (`checks.rs`) sum what the kinds declare, so a new
//! kind adds its file and its line in [`KINDS`], and changes nothing generic.

use futures_util::future::BoxFuture;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    checks::Checks,
    load::{Plan, Report, Setup, Shop},
};

mod fulfilment;
mod purchase_order;
mod replenishment;

/// One kind's part of the suite.
pub struct Kind {
    pub name: &'static str,
    /// Runs once the shop is stocked, before the load starts.
    pub prepare: for<'a> fn(&'a mut Setup, &'a Plan, &'a Shop) -> BoxFuture<'a, ()>,
    /// Where this kind's records say a product's units went.
    pub flow: for<'a> fn(&'a PgPool, &'a Report, Uuid) -> BoxFuture<'a, Flow>,
    /// The kind's own checks at rest; each passed check is named in `checks`.
    pub verify: for<'a> fn(&'a PgPool, &'a Report, &'a mut Checks) -> BoxFuture<'a, ()>,
}

/// A product's units by one kind's records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flow {
    /// Held outside the warehouse and the stores: on the road.
    pub held: i64,
    /// Brought into the network from outside (a supplier's deliveries).
    pub brought_in: i64,
    /// Taken out of the network (sold to customers).
    pub taken_out: i64,
}

impl std::ops::AddAssign for Flow {
    fn add_assign(&mut self, other: Self) {
        self.held += other.held;
        self.brought_in += other.brought_in;
        self.taken_out += other.taken_out;
    }
}

/// Every kind's part, as `sagas::registry()` lists the kinds.
pub static KINDS: &[&Kind] = &[&replenishment::PART, &fulfilment::PART, &purchase_order::PART];

/// A kind's part that prepares nothing.
pub fn prepares_nothing<'a>(_: &'a mut Setup, _: &'a Plan, _: &'a Shop) -> BoxFuture<'a, ()> {
    Box::pin(async {})
}

/// Every registered saga kind has its part here, and no part names an unknown kind.
pub fn assert_complete() {
    let mut declared: Vec<&str> = KINDS.iter().map(|kind| kind.name).collect();
    let mut registered: Vec<&str> = sagas::registry().kinds();
    declared.sort_unstable();
    registered.sort_unstable();
    assert_eq!(declared, registered, "every saga kind has its part in faults/kinds/, and only those");
}
