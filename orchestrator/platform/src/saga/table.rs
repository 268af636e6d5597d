//! The checks every kind's unit tests run on its transition function, the same way for each: the
//! whole (state × input) table, and that every state awaits exactly the command it sent.

use std::fmt::Debug;

use strum::IntoEnumIterator;
use uuid::Uuid;

use super::{InputOf, SagaKind, SagaState};

/// The kind's events as downstream teams bind to them: (name, exchange), in declared order.
pub fn published_events<K: SagaKind>() -> Vec<(&'static str, &'static str)> {
    K::EVENTS.iter().map(|event| (event.name, event.exchange.0)).collect()
}

/// Applies every input in every state and compares with `expected` (the next state, or `None`
/// for a refusal); returns how many pairs are legal. Panics at the first disagreement.
pub fn check_table<K: SagaKind>(
    saga_id: Uuid,
    data: &K::Data,
    inputs: &[InputOf<K>],
    expected: impl Fn(K::State, &InputOf<K>) -> Option<K::State>,
) -> usize
where
    K::State: IntoEnumIterator + Debug,
{
    let mut legal = 0;
    for state in K::State::iter() {
        for input in inputs {
            match (K::transition(saga_id, state, data, input), expected(state, input)) {
                (Ok(step), Some(next)) => {
                    assert_eq!(step.next, next, "{state:?} on {}", input.name());
                    legal += 1;
                }
                (Err(refused), None) => {
                    assert_eq!(refused.state, state.as_ref());
                    assert_eq!(refused.event, input.name());
                }
                (got, want) => panic!("{state:?} on {}: got {got:?}, want {want:?}", input.name()),
            }
        }
    }
    legal
}

/// Every legal step sends exactly the command its next state awaits, and only a closed state
/// awaits nothing.
pub fn check_awaits_what_it_sent<K: SagaKind>(saga_id: Uuid, data: &K::Data, inputs: &[InputOf<K>])
where
    K::State: IntoEnumIterator,
{
    for state in K::State::iter() {
        for input in inputs {
            if let Ok(step) = K::transition(saga_id, state, data, input) {
                let awaited = K::outstanding(saga_id, step.next, &step.data);
                assert_eq!(step.commands, awaited.into_iter().collect::<Vec<_>>(), "{:?}", step.next);
                assert_eq!(step.next.awaits().is_closed(), step.commands.is_empty(), "{:?}", step.next);
            }
        }
    }
}
