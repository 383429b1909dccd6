//! CPU time of the child processes, from `/proc/<pid>/stat`.
//!
//! The kernel reports a process's CPU time (`utime` + `stime`, all threads, including threads that
//! have exited) in clock ticks of `USER_HZ`. The harness reads it just before and just after each
//! measured phase and divides the difference by the requests completed in the phase, which gives
//! the CPU cost per request of the gateway and of the mock.
//!
//! `USER_HZ` is 100 on every architecture the project runs on (x86-64, arm64), so one tick is
//! 10 ms: a phase must burn a few hundred ticks for the per-request figure to be precise to about
//! a percent. Reading it needs `sysconf(_SC_CLK_TCK)`, which std does not wrap and `unsafe` is
//! forbidden here, so the harness assumes 100 and checks it once at startup with `getconf CLK_TCK`
//! (using what `getconf` prints if it ever disagrees).

use std::process::Command;

/// `USER_HZ` on x86-64 and arm64 Linux: the unit of `utime`/`stime` in `/proc/<pid>/stat`.
pub const DEFAULT_TICKS_PER_SECOND: u64 = 100;

/// Below this many ticks in a phase, the ±1 tick rounding of each reading is more than ~2 % of the
/// figure, and the run prints a warning.
pub const LOW_TICKS: u64 = 50;

/// The clock-tick rate used to convert `/proc/<pid>/stat` times, and how it was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockTicks {
    /// Ticks per second.
    pub per_second: u64,
    /// A warning to print when `getconf` could not confirm the assumed rate.
    pub warning: Option<String>,
}

impl ClockTicks {
    /// Runs `getconf CLK_TCK` once and checks it against [`DEFAULT_TICKS_PER_SECOND`].
    pub fn detect() -> Self {
        let output = Command::new("getconf").arg("CLK_TCK").output();
        match output {
            Ok(out) if out.status.success() => Self::from_getconf(&String::from_utf8_lossy(&out.stdout)),
            Ok(out) => Self::assumed(&format!("`getconf CLK_TCK` failed ({})", out.status)),
            Err(e) => Self::assumed(&format!("could not run `getconf CLK_TCK`: {e}")),
        }
    }

    /// Interprets `getconf CLK_TCK`'s output.
    pub fn from_getconf(stdout: &str) -> Self {
        match stdout.trim().parse::<u64>() {
            Ok(DEFAULT_TICKS_PER_SECOND) => Self {
                per_second: DEFAULT_TICKS_PER_SECOND,
                warning: None,
            },
            // Trust the system over the constant: a wrong rate would scale every CPU figure.
            Ok(n) if n > 0 => Self {
                per_second: n,
                warning: Some(format!(
                    "`getconf CLK_TCK` says {n} ticks/s, not the usual {DEFAULT_TICKS_PER_SECOND}; using {n}"
                )),
            },
            _ => Self::assumed(&format!("`getconf CLK_TCK` printed {:?}", stdout.trim())),
        }
    }

    fn assumed(why: &str) -> Self {
        Self {
            per_second: DEFAULT_TICKS_PER_SECOND,
            warning: Some(format!(
                "{why}; assuming {DEFAULT_TICKS_PER_SECOND} ticks/s for CPU times"
            )),
        }
    }
}

/// `utime + stime` (fields 14 and 15, clock ticks) from the text of `/proc/<pid>/stat`.
///
/// Field 2, the command name in parentheses, may itself contain spaces and parentheses (a thread
/// can rename itself to anything), so the fields are counted from the **last** `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// A process's CPU time so far in clock ticks; `None` if unavailable (not Linux, process gone).
pub fn read_cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line (from `cat /proc/self/stat`) with utime 7 and stime 3.
    const CAT: &str = "12305 (cat) R 12298 12298 10954 0 -1 4194304 99 0 0 0 7 3 0 0 20 0 1 0 44134 \
                       3133440 389 18446744073709551615 93903445905408 93903445925289 140737259864832 0 0 0 0 \
                       0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn parses_utime_plus_stime() {
        assert_eq!(parse_stat_cpu_ticks(CAT), Some(10));
    }

    #[test]
    fn command_name_with_spaces_and_parentheses() {
        let line = CAT.replace("(cat)", "(weir (serve) ) x)");
        assert_eq!(parse_stat_cpu_ticks(&line), Some(10));
        let line = CAT.replace("(cat)", "( ) ) 1 2 3 4 5 6 7 8 9 10 11 12 13)");
        assert_eq!(parse_stat_cpu_ticks(&line), Some(10));
        // A name that is only a `)`.
        let line = CAT.replace("(cat)", "())");
        assert_eq!(parse_stat_cpu_ticks(&line), Some(10));
    }

    #[test]
    fn large_tick_counts() {
        let line = CAT.replace(" 7 3 0 0 20 ", " 123456789 987654321 0 0 20 ");
        assert_eq!(parse_stat_cpu_ticks(&line), Some(1_111_111_110));
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(parse_stat_cpu_ticks(""), None);
        assert_eq!(parse_stat_cpu_ticks("12305 cat R 1 2 3"), None);
        // Truncated before stime.
        assert_eq!(parse_stat_cpu_ticks("1 (x) R 1 1 1 0 -1 0 0 0 0 0 7"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) R 1 1 1 0 -1 0 0 0 0 0 7 z 0"), None);
    }

    #[test]
    fn reads_own_cpu_time() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(read_cpu_ticks(std::process::id()).is_some());
        }
        assert_eq!(read_cpu_ticks(u32::MAX), None);
    }

    #[test]
    fn clock_ticks_from_getconf() {
        assert_eq!(
            ClockTicks::from_getconf("100\n"),
            ClockTicks {
                per_second: 100,
                warning: None
            }
        );
        let other = ClockTicks::from_getconf("1024\n");
        assert_eq!(other.per_second, 1024);
        assert!(other.warning.is_some());
        let bad = ClockTicks::from_getconf("undefined\n");
        assert_eq!(bad.per_second, DEFAULT_TICKS_PER_SECOND);
        assert!(bad.warning.unwrap().contains("assuming 100"));
        assert_eq!(ClockTicks::from_getconf("0").per_second, DEFAULT_TICKS_PER_SECOND);
    }
}
