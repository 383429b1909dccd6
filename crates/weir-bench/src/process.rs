//! Child processes: starting `weir mock` / `weir serve`, waiting for their `listening on` line,
//! keeping their pipes drained, reading their memory use from `/proc`, and stopping them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The marker each `weir` subcommand prints on stdout once its listener is bound.
const LISTENING_MARKER: &str = "listening on ";

/// How much of a child's stderr log to quote in an error.
const STDERR_TAIL_BYTES: usize = 4000;

/// A running `weir` child process.
#[derive(Debug)]
pub struct Service {
    /// Human name used in messages (`mock`, `gateway`).
    pub name: &'static str,
    /// The child; killed when dropped.
    child: Child,
    /// OS process id.
    pub pid: u32,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    /// Where the child's stderr goes.
    pub stderr_log: PathBuf,
    /// Resident set size right after the listening line appeared, KiB.
    pub rss_start_kib: Option<u64>,
}

/// Extracts the base URL from a `listening on http://127.0.0.1:PORT` line.
///
/// Returns `Ok(None)` for lines that are not the listening line, and an error if the line names an
/// address other than `127.0.0.1` (the bench never sends traffic anywhere else).
pub fn parse_listening_line(line: &str) -> Result<Option<String>> {
    let Some(pos) = line.find(LISTENING_MARKER) else {
        return Ok(None);
    };
    let rest = line[pos + LISTENING_MARKER.len()..].trim();
    let url = rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let Some(authority) = url.strip_prefix("http://") else {
        bail!("listening line {line:?} does not contain an http:// URL");
    };
    let Some((host, port)) = authority.rsplit_once(':') else {
        bail!("listening line {line:?} has no port");
    };
    if host != "127.0.0.1" {
        bail!("listening line {line:?} names host {host:?}; weir-bench only talks to 127.0.0.1");
    }
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in listening line {line:?}"))?;
    if port == 0 {
        bail!("listening line {line:?} reports port 0");
    }
    Ok(Some(format!("http://127.0.0.1:{port}")))
}

/// Reads one `kB` field (e.g. `VmRSS`, `VmHWM`) from the text of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.trim() != field {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Reads one `kB` field from `/proc/<pid>/status`; `None` if unavailable (not Linux, process gone).
pub fn read_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&text, field)
}

/// The last few KB of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
            let text = String::from_utf8_lossy(&bytes[start..]);
            if text.trim().is_empty() {
                "(stderr was empty)".to_owned()
            } else {
                text.into_owned()
            }
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

impl Service {
    /// Starts `bin args...` with stdout piped and stderr appended to `stderr_log`, and waits up to
    /// `timeout` for the listening line on stdout.
    pub async fn start(
        name: &'static str,
        bin: &Path,
        args: &[String],
        stderr_log: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        let log = File::create(stderr_log)
            .with_context(|| format!("creating {name} log {}", stderr_log.display()))?;
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}: {} {}", bin.display(), args.join(" ")))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited immediately"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{name} stdout not captured"))?;
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + timeout;
        let command_line = format!("{} {}", bin.display(), args.join(" "));

        let base_url = loop {
            match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if let Some(url) = parse_listening_line(&line)? {
                        break url;
                    }
                }
                Ok(Ok(None)) => {
                    // stdout closed: the process has exited or is about to.
                    let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                    let status = match status {
                        Ok(Ok(s)) => describe_status(s),
                        _ => "still running but closed stdout".to_owned(),
                    };
                    bail!(
                        "{name} ({command_line}) exited before printing `listening on ...`: {status}\n\
                         --- stderr ({}) ---\n{}",
                        stderr_log.display(),
                        log_tail(stderr_log)
                    );
                }
                Ok(Err(e)) => return Err(e).context(format!("reading {name} stdout")),
                Err(_) => {
                    bail!(
                        "{name} ({command_line}) did not print `listening on ...` within {timeout:?}\n\
                         --- stderr ({}) ---\n{}",
                        stderr_log.display(),
                        log_tail(stderr_log)
                    );
                }
            }
        };

        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let rss_start_kib = read_status_kib(pid, "VmRSS");
        Ok(Self {
            name,
            child,
            pid,
            base_url,
            stderr_log: stderr_log.to_owned(),
            rss_start_kib,
        })
    }

    /// Fails with the stderr tail if the child has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("polling child")? {
            bail!(
                "{} exited unexpectedly: {}\n--- stderr ({}) ---\n{}",
                self.name,
                describe_status(status),
                self.stderr_log.display(),
                log_tail(&self.stderr_log)
            );
        }
        Ok(())
    }

    /// Peak resident set size so far (`VmHWM`), KiB.
    pub fn rss_peak_kib(&self) -> Option<u64> {
        read_status_kib(self.pid, "VmHWM")
    }

    /// Current resident set size (`VmRSS`), KiB.
    pub fn rss_now_kib(&self) -> Option<u64> {
        read_status_kib(self.pid, "VmRSS")
    }

    /// Kills the child and reaps it.
    pub async fn stop(mut self) {
        // Errors mean it is already gone, which is what we want.
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

fn describe_status(s: ExitStatus) -> String {
    match s.code() {
        Some(code) => format!("exit code {code}"),
        None => format!("{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_line() {
        assert_eq!(
            parse_listening_line("listening on http://127.0.0.1:40123")
                .unwrap()
                .as_deref(),
            Some("http://127.0.0.1:40123")
        );
        assert_eq!(
            parse_listening_line("  listening on http://127.0.0.1:8080/  ")
                .unwrap()
                .as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            parse_listening_line("weir mock listening on http://127.0.0.1:9 (pid 4)")
                .unwrap()
                .as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(parse_listening_line("starting up").unwrap(), None);
        assert_eq!(parse_listening_line("").unwrap(), None);
    }

    #[test]
    fn rejects_bad_listening_lines() {
        assert!(parse_listening_line("listening on http://0.0.0.0:80").is_err());
        assert!(parse_listening_line("listening on http://10.1.2.3:80").is_err());
        assert!(parse_listening_line("listening on https://127.0.0.1:80").is_err());
        assert!(parse_listening_line("listening on http://127.0.0.1").is_err());
        assert!(parse_listening_line("listening on http://127.0.0.1:0").is_err());
        assert!(parse_listening_line("listening on http://127.0.0.1:99999").is_err());
    }

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tweir\nVmPeak:\t  200000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t    9876 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(9876));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn reads_own_proc_status() {
        if Path::new("/proc/self/status").exists() {
            assert!(read_status_kib(std::process::id(), "VmHWM").unwrap() > 0);
        }
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-bench-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn start_waits_for_listening_line_and_stops() {
        let dir = temp_dir("ok");
        let bin = script(
            &dir,
            "fake",
            "echo booting; echo 'some log' >&2; echo 'listening on http://127.0.0.1:4567'; \
             i=0; while [ $i -lt 100000 ]; do echo spam; i=$((i+1)); done; exec sleep 30",
        );
        let log = dir.join("fake.log");
        let svc = Service::start("fake", &bin, &[], &log, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(svc.base_url, "http://127.0.0.1:4567");
        let pid = svc.pid;
        svc.stop().await;
        assert!(std::fs::read_to_string(&log).unwrap().contains("some log"));
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} still exists after stop"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn start_reports_stderr_when_child_exits() {
        let dir = temp_dir("exit");
        let bin = script(&dir, "fake", "echo 'error: unknown subcommand mock' >&2; exit 2");
        let log = dir.join("fake.log");
        let err = Service::start("mock", &bin, &["mock".to_owned()], &log, Duration::from_secs(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("exit code 2"), "{err}");
        assert!(err.contains("unknown subcommand mock"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn start_times_out() {
        let dir = temp_dir("timeout");
        let bin = script(&dir, "fake", "echo 'still thinking' >&2; exec sleep 30");
        let log = dir.join("fake.log");
        let err = Service::start("gateway", &bin, &[], &log, Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not print"), "{err}");
        assert!(err.contains("still thinking"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
