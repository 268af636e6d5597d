//! W3C trace context (`traceparent`), carried from an HTTP request through every message it causes.
//!
//! The context of the work in hand lives in a task-local ([`scope`], [`current`]): the HTTP layer
//! sets it from the request's `traceparent` header, the consumer from each delivery's. Messages
//! written to the outbox meanwhile carry a child of it, so a participant's reply continues the
//! trace of the command it answers. A saga keeps the trace id it started with (`saga.trace_id`):
//! commands sent later by the deadline sweeper or an operator's action stay in that same trace.

use std::{fmt, future::Future};

use uuid::Uuid;

/// The HTTP and AMQP header that carries the trace context.
pub const HEADER: &str = "traceparent";

/// What [`TraceContext::header`] writes: version 00, sampled.
pub const HEADER_PATTERN: &str = "^00-[0-9a-f]{32}-[0-9a-f]{16}-01$";

/// A position in a trace: the trace id and the span (request or message) within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

fn random_span() -> u64 {
    // Never zero: W3C reserves the all-zero id as invalid.
    Uuid::new_v4().as_u64_pair().0 | 1
}

impl TraceContext {
    /// The start of a new trace.
    pub fn root() -> Self {
        Self { trace_id: Uuid::new_v4().as_u128(), span_id: random_span() }
    }

    /// A trace whose id is derived from `id` (a saga id, for sagas started before trace ids were
    /// recorded): stable, so all of its messages still share one trace.
    pub fn derived(id: Uuid) -> Self {
        Self { trace_id: id.as_u128(), span_id: random_span() }
    }

    /// Parses a `traceparent` header: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
    /// Anything else, or all-zero ids, is not a trace context.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|id| *id != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|id| *id != 0)?;
        Some(Self { trace_id, span_id })
    }

    /// A context with the trace id given as 32 hex digits (as stored with a saga).
    pub fn from_trace_id(trace_id: &str) -> Option<Self> {
        let trace_id = u128::from_str_radix(trace_id, 16).ok().filter(|id| *id != 0)?;
        Some(Self { trace_id, span_id: random_span() })
    }

    /// A new span in the same trace: one per message sent.
    pub fn child(self) -> Self {
        Self { span_id: random_span(), ..self }
    }

    pub fn trace_id_hex(self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `traceparent` header value (sampled).
    pub fn header(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }
}

/// The trace context of the work in hand, if it has one.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// Runs `work` within `context`.
pub async fn scope<F: Future>(context: TraceContext, work: F) -> F::Output {
    CURRENT.scope(context, work).await
}

#[cfg(test)]
mod tests {
    use super::TraceContext;

    #[test]
    fn round_trips_and_rejects_what_w3c_rejects() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(header).unwrap();
        assert_eq!(context.header(), header);
        assert_eq!(context.child().trace_id, context.trace_id);
        assert_ne!(context.child().span_id, context.span_id);
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        assert!(TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later").is_some());
    }

    #[test]
    fn a_stored_trace_id_continues_its_trace() {
        let root = TraceContext::root();
        let again = TraceContext::from_trace_id(&root.trace_id_hex()).unwrap();
        assert_eq!(again.trace_id, root.trace_id);
    }
}
