//! Each test's figures: one line on stderr, and one row of a markdown table appended to
//! `target/fault-suite.md`, so a whole run's table can be pasted into docs/testing.md.

use std::{io::Write, sync::Once};

use super::{
    checks::{Checks, Sagas},
    cluster::target_dir,
    load::{Accepted, Outcome, Report},
};

#[derive(Debug)]
pub struct Figures {
    pub test: &'static str,
    pub orders: usize,
    pub accepted: usize,
    pub refused: usize,
    pub fulfilled: usize,
    pub cancelled: usize,
    pub sagas: Sagas,
    pub faults: usize,
    pub killed: usize,
    /// Requests sent again because their outcome was unknown (connection lost, 5xx).
    pub retried: usize,
    pub retry_reasons: String,
    pub seconds: f64,
    pub checks: Checks,
}

impl Figures {
    pub fn new(
        test: &'static str,
        report: &Report,
        sagas: Sagas,
        faults: usize,
        killed: usize,
        seconds: f64,
        checks: Checks,
    ) -> Self {
        let with_status = |wanted: &str| {
            report
                .outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Accepted(Accepted { status, .. }) if *status == wanted))
                .count()
        };
        let accepted = report.outcomes.iter().filter(|o| matches!(o, Outcome::Accepted(_))).count();
        Self {
            test,
            orders: report.outcomes.len(),
            accepted,
            refused: report.outcomes.len() - accepted,
            fulfilled: with_status("fulfilled"),
            cancelled: with_status("cancelled"),
            sagas,
            faults,
            killed,
            retried: report.retries.values().sum(),
            retry_reasons: report.retries.iter().map(|(why, n)| format!("{why}: {n}")).collect::<Vec<_>>().join(", "),
            seconds,
            checks,
        }
    }

    /// Prints the summary and appends the table row; the first test of a run starts a table.
    pub fn record(&self) {
        let s = &self.sagas;
        eprintln!(
            "fault suite | {}: {} orders ({} accepted, {} refused, {} fulfilled, {} cancelled), {} sagas \
             ({}; {} awaiting an operator; {} commands resent, {} stale replies refused), \
             {} faults injected, {} processes killed, {} requests retried [{}], {:.1} s, {} checks passed",
            self.test,
            self.orders,
            self.accepted,
            self.refused,
            self.fulfilled,
            self.cancelled,
            s.total,
            s.ended_by_kind(),
            s.awaiting_operator,
            s.resent,
            s.refused_events,
            self.faults,
            self.killed,
            self.retried,
            self.retry_reasons,
            self.seconds,
            self.checks.passed.len(),
        );
        let path = target_dir().join("fault-suite.md");
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("can write the figures");
        static HEADER: Once = Once::new();
        HEADER.call_once(|| {
            let started = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
            writeln!(
                file,
                "\n### Fault suite, run of {started}\n\n\
                 | fault | orders | accepted | refused | sagas | ended, by kind and state | awaiting an operator | \
                 commands resent | faults injected | processes killed | requests retried | seconds | checks passed |\n\
                 |---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|"
            )
            .expect("can write the figures");
        });
        writeln!(
            file,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |",
            self.test,
            self.orders,
            self.accepted,
            self.refused,
            s.total,
            s.ended_by_kind(),
            s.awaiting_operator,
            s.resent,
            self.faults,
            self.killed,
            self.retried,
            self.seconds,
            self.checks.passed.len(),
        )
        .expect("can write the figures");
    }
}
