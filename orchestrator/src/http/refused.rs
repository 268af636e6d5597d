//! What the API refuses before any handler runs (a 429, a 401 without a valid key, a 405, a
//! connection over its client's cap...) is counted, not logged one by one: a flood of refusals
//! would otherwise write a line each and fill the disk. The metrics count every one; the log
//! gets at most one line per [`WINDOW`], summing up the window, with its first refusal as an
//! example. Whatever a client sent reaches the log cut to [`MAX_LOGGED`] bytes.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::access::client::ClientAddr;

/// The longest text a client chose (a path, a header's value) that a log line carries.
pub const MAX_LOGGED: usize = 128;
/// At most one summary line per window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// `text` cut to [`MAX_LOGGED`] bytes, at a character boundary, marked when cut.
pub fn short(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_LOGGED {
        return text.into();
    }
    let mut end = MAX_LOGGED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(+{} bytes)", &text[..end], text.len() - end).into()
}

/// Why something was refused: a status with the layer that gave it, or a connection cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// A request the door or the router answered itself, with this status.
    Request(u16),
    /// A connection over its client's cap (or, behind a proxy, a request over it).
    OverClientCap,
    /// An idle connection closed to make room near the global cap.
    Evicted,
}

impl Refusal {
    fn label(self) -> String {
        match self {
            Self::Request(status) => status.to_string(),
            Self::OverClientCap => "over the per-client cap".into(),
            Self::Evicted => "idle connections evicted".into(),
        }
    }
}

struct Window {
    started: Instant,
    counts: BTreeMap<Refusal, u64>,
    example: Option<String>,
}

static CURRENT: Mutex<Option<Window>> = Mutex::new(None);

/// Counts one refusal; `example` describes it, in case it is the window's first.
pub fn record(refusal: Refusal, example: impl FnOnce() -> String) {
    let label = match refusal {
        Refusal::Request(status) => ("request", status.to_string()),
        Refusal::OverClientCap => ("connection", "over_client_cap".to_owned()),
        Refusal::Evicted => ("connection", "evicted".to_owned()),
    };
    metrics::counter!("http_refused_total", "what" => label.0, "why" => label.1).increment(1);
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    let window = current.get_or_insert_with(|| Window {
        started: Instant::now(),
        counts: BTreeMap::new(),
        example: Some(example()),
    });
    *window.counts.entry(refusal).or_default() += 1;
    if window.started.elapsed() >= WINDOW {
        log(current.take());
    }
}

/// Logs the window so far, if it has anything: a periodic call keeps a quiet tail from waiting
/// for the next refusal.
pub fn flush() {
    let window = CURRENT.lock().unwrap_or_else(|p| p.into_inner()).take();
    log(window);
}

fn log(window: Option<Window>) {
    let Some(window) = window else { return };
    let total: u64 = window.counts.values().sum();
    let mut counts = String::new();
    for (refusal, count) in &window.counts {
        let _ = write!(counts, "{}{}: {count}", if counts.is_empty() { "" } else { ", " }, refusal.label());
    }
    tracing::info!(
        refused = total,
        seconds = window.started.elapsed().as_secs(),
        counts,
        first = window.example.unwrap_or_default(),
        "refused at the door (summed up, not logged one by one)"
    );
}

/// How a refused request reads in the summary: who, and what it asked for.
pub fn describe(client: Option<ClientAddr>, method: &str, path: &str) -> String {
    let client = client.map_or_else(|| "an unknown address".to_owned(), |c| c.to_string());
    format!("{client}: {} {}", short(method), short(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        assert_eq!(short("/stores"), "/stores");
        let long = format!("/{}", "é".repeat(200));
        let cut = short(&long);
        assert!(cut.len() < MAX_LOGGED + 20, "{cut}");
        assert!(cut.ends_with("…(+274 bytes)"), "{cut}");
    }
}
