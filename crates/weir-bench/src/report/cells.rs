//! Cell formatters shared by the table sections: a missing figure prints as `-` everywhere, and
//! the same kind of figure has the same precision in every section, so columns can be compared
//! across sections.

use super::target::ProcessPhase;

/// Milliseconds to the microsecond: the histograms' resolution, no more.
pub(super) fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

/// A difference in milliseconds, always signed so a gateway faster than direct stands out.
pub(super) fn signed_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:+.3}"))
}

/// KiB as MiB to a tenth: memory differences below that are noise between runs.
pub(super) fn mib(kib: Option<u64>) -> String {
    // KiB values are far below 2^52.
    #[allow(clippy::cast_precision_loss)]
    kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// A ratio as `0.950x`, so it cannot be mistaken for a figure in the row's unit.
pub(super) fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}x"))
}

/// CPU µs per request, marked `*` when the phase had too few ticks to be precise.
pub(super) fn cpu_us(p: Option<ProcessPhase>) -> String {
    match p {
        Some(ProcessPhase {
            cpu_us_per_req: Some(us),
            low_resolution,
            ..
        }) => format!("{us:.1}{}", if low_resolution { "*" } else { " " }),
        _ => "- ".to_owned(),
    }
}

/// Raw tick count, printed beside the per-request figure so its precision can be judged.
pub(super) fn ticks(p: Option<ProcessPhase>) -> String {
    p.map_or_else(|| "-".to_owned(), |p| p.cpu_ticks.to_string())
}
