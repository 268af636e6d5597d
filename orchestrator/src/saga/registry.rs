//! The saga kinds the engine knows, looked up by the `kind` stored with each saga.
//!
//! The engine's functions are generic over [`SagaKind`]; this registry erases the type so that a
//! reply or a deadline, which arrives knowing only a saga id, reaches the right kind's code.

use std::{collections::HashMap, future::Future, marker::PhantomData, pin::Pin};

use participants::{config::SagaTiming, protocol::Envelope};
use sqlx::PgConnection;

use super::{
    Input, SagaKind,
    engine::{self, Applied, EngineError},
    replenishment::Replenishment,
    store::SagaRow,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One kind's engine entry points, without its types.
pub trait Driver: Send + Sync {
    fn on_reply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
        message: &'a Envelope,
    ) -> BoxFuture<'a, Result<Applied, EngineError>>;

    fn on_deadline<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
    ) -> BoxFuture<'a, Result<(), EngineError>>;
}

struct Kind<K>(PhantomData<fn() -> K>);

impl<K: SagaKind> Driver for Kind<K> {
    fn on_reply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
        message: &'a Envelope,
    ) -> BoxFuture<'a, Result<Applied, EngineError>> {
        Box::pin(async move {
            let reply: K::Reply = message.body()?;
            engine::apply::<K>(tx, timing, row, &Input::Reply(reply), "participant").await
        })
    }

    fn on_deadline<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(engine::on_deadline::<K>(tx, timing, row))
    }
}

pub struct Registry {
    kinds: HashMap<&'static str, Box<dyn Driver>>,
}

impl Registry {
    pub fn empty() -> Self {
        Self { kinds: HashMap::new() }
    }

    /// Every kind this build knows.
    pub fn standard() -> Self {
        Self::empty().with::<Replenishment>()
    }

    pub fn with<K: SagaKind>(mut self) -> Self {
        self.kinds.insert(K::KIND, Box::new(Kind::<K>(PhantomData)));
        self
    }

    pub fn driver(&self, kind: &str) -> Result<&dyn Driver, EngineError> {
        self.kinds.get(kind).map(|d| &**d).ok_or_else(|| EngineError::UnknownKind(kind.to_owned()))
    }
}
