//! The tally of a chaos run and its table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::classify::{Outcome, Verdict};
use crate::traffic::Shot;
use crate::{Face, MAX_ATTEMPTS};

/// How many wrong outcomes keep their detail, to debug.
const KEPT_DETAILS: usize = 20;

/// Outcome counts of one row: a face, a model group and unary/streamed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    /// Requests per outcome, in [`Outcome::ALL`] order.
    pub counts: [u64; Outcome::ALL.len()],
}

impl Cell {
    /// Requests with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.counts[i])
    }

    fn add(&mut self, outcome: Outcome) {
        if let Some(i) = Outcome::ALL.iter().position(|o| *o == outcome) {
            self.counts[i] += 1;
        }
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A chaos run's results.
#[derive(Debug, Clone)]
pub struct Report {
    /// The fault mix, as given.
    pub mix: String,
    /// Counts per (face, model, streamed).
    pub rows: BTreeMap<(Face, &'static str, bool), Cell>,
    /// Upstream calls per request: how many requests caused each count.
    pub calls: BTreeMap<u32, u64>,
    /// Requests that caused more upstream calls than [`MAX_ATTEMPTS`].
    pub over_attempts: u64,
    /// The first wrong outcomes with what was wrong: `(index, face, model, stream, outcome, detail)`.
    pub details: Vec<String>,
    /// Faults the mock injected, by name (and `none`).
    pub injected: Vec<(String, u64)>,
    /// Wall time of the traffic.
    pub elapsed: Duration,
}

impl Report {
    pub(crate) fn new(mix: String) -> Report {
        Report {
            mix,
            rows: BTreeMap::new(),
            calls: BTreeMap::new(),
            over_attempts: 0,
            details: Vec::new(),
            injected: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub(crate) fn add(&mut self, shot: &Shot, verdict: &Verdict, calls: u32) {
        self.rows
            .entry((shot.face, shot.model, shot.stream))
            .or_default()
            .add(verdict.outcome);
        *self.calls.entry(calls).or_insert(0) += 1;
        if calls > MAX_ATTEMPTS {
            self.over_attempts += 1;
        }
        let notable = !matches!(
            verdict.outcome,
            Outcome::Complete | Outcome::CleanError | Outcome::ErrorEvent
        );
        if notable && self.details.len() < KEPT_DETAILS {
            self.details.push(format!(
                "#{} {} {} {}: {} — {}",
                shot.index,
                shot.face.label(),
                shot.model,
                if shot.stream { "stream" } else { "unary" },
                verdict.outcome.label(),
                verdict.detail.as_deref().unwrap_or("-"),
            ));
        }
    }

    /// All rows summed.
    pub fn total(&self) -> Cell {
        let mut total = Cell::default();
        for cell in self.rows.values() {
            for (sum, n) in total.counts.iter_mut().zip(cell.counts) {
                *sum += n;
            }
        }
        total
    }

    /// Requests sent.
    pub fn requests(&self) -> u64 {
        self.total().total()
    }

    /// The most upstream calls any request caused.
    pub fn max_calls(&self) -> u32 {
        self.calls.keys().next_back().copied().unwrap_or(0)
    }

    /// 0 hangs, 0 silently wrong, no request over the attempt limit.
    pub fn verdict_holds(&self) -> bool {
        let total = self.total();
        total.count(Outcome::Hang) == 0 && total.count(Outcome::SilentlyWrong) == 0 && self.over_attempts == 0
    }

    /// The table, in Markdown.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chaos: {} requests in {:.1} s, fault mix {}\n",
            self.requests(),
            self.elapsed.as_secs_f64(),
            self.mix
        );
        let header: Vec<&str> = Outcome::ALL.iter().map(|o| o.label()).collect();
        let _ = writeln!(out, "| face | model | mode | {} |", header.join(" | "));
        let _ = writeln!(out, "|---|---|---|{}", "---:|".repeat(header.len()));
        for ((face, model, stream), cell) in &self.rows {
            let mode = if *stream { "stream" } else { "unary" };
            let _ = writeln!(out, "| {} | {model} | {mode} | {} |", face.label(), cells(cell));
        }
        let _ = writeln!(out, "| **all** | | | {} |", cells(&self.total()));
        let calls: Vec<String> = self.calls.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        let _ = writeln!(
            out,
            "\nupstream calls per request (calls: requests): {}; max {} (limit {MAX_ATTEMPTS}), over the limit: {}",
            calls.join(", "),
            self.max_calls(),
            self.over_attempts
        );
        let injected: Vec<String> = self.injected.iter().map(|(f, n)| format!("{f}: {n}")).collect();
        let _ = writeln!(out, "faults injected by the mock: {}", injected.join(", "));
        let _ = writeln!(
            out,
            "verdict (0 hangs, 0 silently wrong, calls ≤ attempts): {}",
            if self.verdict_holds() { "HOLDS" } else { "BROKEN" }
        );
        if !self.details.is_empty() {
            let _ = writeln!(out, "\nfirst notable outcomes:");
            for detail in &self.details {
                let _ = writeln!(out, "- {detail}");
            }
        }
        out
    }
}

fn cells(cell: &Cell) -> String {
    cell.counts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}
