//! What a gateway run starts from: the `weir` binaries (the mock's, and one gateway or an A/B
//! pair), the gateway configuration pointing at the mock, and the temp directory it is written to.
//!
//! Everything here is checked before any measuring starts, so a missing binary or a bad
//! `--gateway-bin` fails in a second rather than after the limiter bench or a warmup.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cli::{CacheMode, LimitsMode};
use crate::load;

/// Most gateways one run compares: A and B.
const MAX_GATEWAYS: usize = 2;

/// The gateway configuration pointing at the mock.
///
/// The pool caps are raised above any concurrency the bench uses: with the defaults (30 per host),
/// requests beyond 30 in flight queue for a connection slot, and the bench would measure that cap
/// (a whole upstream round trip at the tail) rather than the gateway's own cost.
pub fn gateway_config(mock_base_url: &str) -> String {
    format!(
        "logging:\n  level: warn\nupstream_defaults:\n  pool: {{ max_connections: 4096, max_connections_per_host: 4096 }}\n\
         models:\n  - name: {model}\n    deployments:\n      - provider: openai\n        \
         base_url: {mock_base_url}/v1\n        api_key: {key}\n        model: {model}\n",
        model = load::MODEL,
        key = load::API_KEY,
    )
}

/// Where [`limits_config`] puts the deployments' limits: after the pool, under `upstream_defaults`.
const LIMITS_SLOT: &str = "max_connections_per_host: 4096 }\n";

/// `config` with the limits of `--limits`: generous (every request is admitted), in process or
/// shared through Redis (a fresh key prefix per run).
pub fn limits_config(config: &str, mode: LimitsMode, redis_url: &str) -> String {
    let limits = "  rate_limits: { requests_per_minute: 1000000000, input_tokens_per_minute: 1000000000000, \
                  output_tokens_per_minute: 1000000000000, mode: fail_fast }\n";
    let prefix = format!(
        "weir-bench-limits:{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    match mode {
        LimitsMode::Off => config.to_owned(),
        LimitsMode::Local => config.replacen(LIMITS_SLOT, &format!("{LIMITS_SLOT}{limits}"), 1),
        LimitsMode::Shared => {
            config.replacen(LIMITS_SLOT, &format!("{LIMITS_SLOT}{limits}"), 1)
                + &format!("redis:\n  url: {redis_url}\n  key_prefix: {prefix}\n")
        }
    }
}

/// The `cache:` section for `--cache` (empty when off). `aggressive`, so the bench's request (no
/// temperature) is cacheable as it is; a fresh key prefix, so a run never starts with old entries.
pub fn cache_section(mode: CacheMode, redis_url: &str) -> String {
    let prefix = format!(
        "weir-bench:{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    match mode {
        CacheMode::Off => String::new(),
        CacheMode::Memory => "cache:\n  strategy: aggressive\n".to_owned(),
        CacheMode::Redis => format!(
            "cache:\n  strategy: aggressive\n  memory: {{ enabled: false }}\n  redis:\n    url: {redis_url}\n    key_prefix: {prefix}\n"
        ),
    }
}

/// `--weir-bin`, or `weir` next to this executable.
pub fn resolve_weir_bin(flag: Option<PathBuf>) -> Result<PathBuf> {
    let path = match flag {
        Some(p) => p,
        None => {
            let exe = std::env::current_exe().context("locating the weir-bench executable")?;
            exe.parent()
                .ok_or_else(|| anyhow!("executable {} has no parent", exe.display()))?
                .join("weir")
        }
    };
    if !path.is_file() {
        bail!(
            "weir binary not found at {}; build it with `cargo build --release -p weir-gateway` \
             (and run target/release/weir-bench), or pass --weir-bin PATH",
            path.display()
        );
    }
    absolute(&path)
}

/// Absolute, so the path in the report is unambiguous.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// The `weir` binaries of a run.
#[derive(Debug)]
pub struct Binaries {
    /// Runs the mock (and the gateway without `--gateway-bin`).
    pub weir: PathBuf,
    /// One gateway, or A and B.
    pub gateways: Vec<GatewaySpec>,
}

/// One gateway to start and measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    /// Target name in the report: `gateway`, or `gateway-A` / `gateway-B` in an A/B run.
    pub name: &'static str,
    /// Its `weir` binary.
    pub bin: PathBuf,
}

/// The gateways from `--gateway-bin` (none: `--weir-bin`'s). One keeps the usual `gateway` name, so a
/// single-gateway report reads the same whichever binary it ran.
pub fn gateway_specs(flags: &[PathBuf], weir_bin: &Path) -> Result<Vec<GatewaySpec>> {
    if flags.len() > MAX_GATEWAYS {
        bail!(
            "--gateway-bin given {} times; an A/B run compares at most {MAX_GATEWAYS} gateways",
            flags.len()
        );
    }
    for path in flags {
        if !path.is_file() {
            bail!("gateway binary not found at {} (--gateway-bin)", path.display());
        }
    }
    let bins = match flags {
        [] => vec![weir_bin.to_owned()],
        _ => flags.iter().map(|p| absolute(p)).collect::<Result<_>>()?,
    };
    let names: &[&'static str] = if bins.len() == 1 {
        &["gateway"]
    } else {
        &["gateway-A", "gateway-B"]
    };
    Ok(names
        .iter()
        .zip(bins)
        .map(|(&name, bin)| GatewaySpec { name, bin })
        .collect())
}

/// A per-run temp directory (holding the generated gateway config), removed when dropped, including
/// when the run is interrupted.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates the directory, named after this process so concurrent runs do not collide.
    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("weir-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: it only holds the generated config.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_at_mock() {
        let yaml = gateway_config("http://127.0.0.1:4242");
        assert_eq!(
            yaml,
            "logging:\n  level: warn\nupstream_defaults:\n  pool: { max_connections: 4096, max_connections_per_host: 4096 }\n\
             models:\n  - name: mock-model\n    deployments:\n      - provider: openai\n        \
             base_url: http://127.0.0.1:4242/v1\n        api_key: bench-key\n        model: mock-model\n"
        );
    }

    #[test]
    fn limits_go_under_upstream_defaults_and_parse() {
        let base = gateway_config("http://127.0.0.1:4242");
        assert_eq!(limits_config(&base, LimitsMode::Off, "redis://x"), base);
        for mode in [LimitsMode::Local, LimitsMode::Shared] {
            let yaml = limits_config(&base, mode, "redis://127.0.0.1:6379");
            let config = weir::Config::from_yaml(&yaml, None).unwrap();
            let limits = config.models[0].deployments[0].rate_limits.clone().unwrap();
            assert_eq!(limits.requests_per_minute, Some(1_000_000_000));
            assert_eq!(config.redis.is_some(), mode == LimitsMode::Shared);
        }
    }

    #[test]
    fn missing_weir_bin_is_a_clear_error() {
        let err = resolve_weir_bin(Some(PathBuf::from("/nonexistent/weir")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--weir-bin"), "{err}");
        assert!(err.contains("cargo build --release -p weir-gateway"), "{err}");
    }

    #[test]
    fn gateway_specs_default_single_and_ab() {
        // Any existing file stands in for a binary.
        let exe = std::env::current_exe().unwrap();
        let weir = PathBuf::from("/w/weir");
        let one = gateway_specs(&[], &weir).unwrap();
        assert_eq!(
            one,
            [GatewaySpec {
                name: "gateway",
                bin: weir.clone()
            }]
        );
        let one = gateway_specs(std::slice::from_ref(&exe), &weir).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].name, &one[0].bin), ("gateway", &exe));
        let ab = gateway_specs(&[exe.clone(), exe.clone()], &weir).unwrap();
        let names: Vec<_> = ab.iter().map(|g| g.name).collect();
        assert_eq!(names, ["gateway-A", "gateway-B"]);
        let err = gateway_specs(&[exe.clone(), exe.clone(), exe], &weir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 2"), "{err}");
        let err = gateway_specs(&[PathBuf::from("/nonexistent/weir")], &weir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--gateway-bin"), "{err}");
    }
}
