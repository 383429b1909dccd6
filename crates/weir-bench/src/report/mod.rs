//! The results of a gateway run: the JSON document written to `--json` and the aligned text table
//! printed on stdout.
//!
//! The JSON model is split by what it describes: the run as a whole (`model`), one target's
//! figures and its cost against direct (`target`), and the A/B ratios (`ab`). The text table is
//! rendered section by section: the main tables and CPU (`table`), the A/B section (`ab`, next to
//! the ratios it prints) and the `--rounds` section (`rounds_table`); `cells` holds the cell
//! formatters they share, so a figure reads the same in every section.
//!
//! The layout of both outputs is a contract (scripts read the JSON, people diff the tables), so
//! changes here are changes to `SCHEMA_VERSION` or to what docs/benchmarks.md shows.

mod ab;
mod cells;
#[cfg(test)]
mod fixtures;
mod model;
mod rounds_table;
mod table;
mod target;

pub use ab::AbRatios;
pub use model::{Machine, ProcessStats, Processes, Report, SCHEMA_VERSION, ScenarioReport, Settings};
pub use table::render_table;
pub use target::{Comparison, OpenInfo, ProcessPhase, TargetCpu, TargetReport};
