//! The YAML file as written, and its validation into [`Config`].
//!
//! Each section validates itself (`TryFrom<Raw…>`, in the section's module) and reports a
//! [`FieldError`] relative to the section; this module walks the file, lays `upstream_defaults`
//! under each deployment, checks the rules that span sections (unique names and ids, fallbacks,
//! `default_model`) and places every error: the section's path before the field, and the line.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    CacheConfig, Config, ConfigError, ConfigSource, FieldError, ModelGroupConfig, ResilienceConfig,
    ServerConfig, Strategy, TracingConfig,
    cache::RawCache,
    deployment::{RawDeployment, deployment, expand_keys},
    pricing::{RawPrice, pricing},
    redis::RawRedisSection,
    retry::RawResilience,
    server::{RawLogging, RawServer, RawTracing},
    upstream::RawUpstream,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    logging: RawLogging,
    /// OpenTelemetry trace export (see [`TracingConfig`]).
    #[serde(default)]
    tracing: RawTracing,
    /// Timeouts, pool limits, retries, breaker, limits and health checks every deployment starts
    /// from.
    #[serde(default)]
    upstream_defaults: RawUpstream,
    #[serde(default)]
    models: Vec<Spanned<RawModelGroup>>,
    default_model: Option<Spanned<String>>,
    #[serde(default)]
    resilience: RawResilience,
    /// Model prices overriding or adding to the built-in table.
    #[serde(default)]
    pricing: BTreeMap<String, Spanned<RawPrice>>,
    cache: Option<Spanned<RawCache>>,
    /// Shared rate limits (see [`super::RedisConfig`]).
    redis: Option<Spanned<RawRedisSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelGroup {
    name: Spanned<String>,
    #[serde(default)]
    deployments: Vec<Spanned<RawDeployment>>,
    /// Groups tried, in order, when this one's deployments are all exhausted.
    #[serde(default)]
    fallbacks: Vec<Spanned<String>>,
    /// Larger-context groups tried when the upstream says the prompt is too long.
    #[serde(default)]
    context_window_fallbacks: Vec<Spanned<String>>,
    /// How requests are spread over the deployments.
    strategy: Option<Spanned<String>>,
}

pub(super) fn parse(text: &str, file: Option<&str>) -> Result<Config, ConfigError> {
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| syntax_error(&e, file))?;
    validate(raw, file)
}

/// serde-saphyr renders a snippet with the location; we keep its message and pull out the line.
fn syntax_error(err: &serde_saphyr::Error, file: Option<&str>) -> ConfigError {
    let line = err.location().map(|loc| loc.line() as usize).filter(|l| *l > 0);
    let text = err.to_string();
    // The parser's message starts with its own "error: "; ours adds the location before it.
    let message = text.strip_prefix("error: ").unwrap_or(&text).to_owned();
    ConfigError {
        file: file.map(str::to_owned),
        line,
        field: None,
        message,
    }
}

/// Where errors are reported: the file.
struct Ctx<'a> {
    file: Option<&'a str>,
}

impl Ctx<'_> {
    /// An error on `field` (a full path) at `line` (0: unknown).
    fn error(&self, line: u64, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        self.place(line, "", FieldError::new(field, message))
    }

    /// A section's error, placed: the section's path before the field, and the section's `line`
    /// (0: unknown) unless the error knows a more precise one.
    fn place(&self, line: u64, section: &str, error: FieldError) -> ConfigError {
        let field = error.path_under(section);
        ConfigError {
            file: self.file.map(str::to_owned),
            line: error.line.or(usize::try_from(line).ok().filter(|l| *l > 0)),
            field: Some(field),
            message: error.message,
        }
    }
}

fn validate(raw: RawConfig, file: Option<&str>) -> Result<Config, ConfigError> {
    let ctx = Ctx { file };
    let server = ServerConfig::try_from(raw.server).map_err(|e| ctx.place(0, "server", e))?;
    let logging = raw.logging.into();
    let tracing = TracingConfig::try_from(raw.tracing).map_err(|e| ctx.place(0, "tracing", e))?;

    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    let mut models = Vec::with_capacity(raw.models.len());
    let mut pending_fallbacks = Vec::with_capacity(raw.models.len());
    for (gi, group) in raw.models.into_iter().enumerate() {
        let group_line = group.referenced.line();
        let group = group.value;
        let name = group.name.value.trim().to_owned();
        let path = format!("models[{gi}]");
        let name_line = group.name.referenced.line();
        if name.is_empty() {
            return Err(ctx.error(name_line, format!("{path}.name"), "a model name cannot be empty"));
        }
        if name[..name.len() - 1].contains('*') {
            return Err(ctx.error(
                name_line,
                format!("{path}.name"),
                format!("`{name}`: `*` is only allowed at the end (a prefix pattern such as `gpt-*`)"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(ctx.error(
                name_line,
                format!("{path}.name"),
                format!("model `{name}` is defined twice"),
            ));
        }
        if group.deployments.is_empty() {
            return Err(ctx.error(
                group_line,
                format!("{path}.deployments"),
                format!("model `{name}` needs at least one deployment"),
            ));
        }
        let mut expanded = Vec::with_capacity(group.deployments.len());
        for (di, dep) in group.deployments.into_iter().enumerate() {
            let dpath = format!("{path}.deployments[{di}]");
            let line = dep.referenced.line();
            for (one, sub) in expand_keys(dep, &name, di).map_err(|e| ctx.place(line, &dpath, e))? {
                // An expanded key's errors are placed under it: `deployments[0].api_keys[1]`.
                let one_path = if sub.is_empty() {
                    dpath.clone()
                } else {
                    format!("{dpath}.{sub}")
                };
                expanded.push((one, one_path, di, !sub.is_empty()));
            }
        }
        let mut deployments = Vec::with_capacity(expanded.len());
        for (dep, dpath, di, id_checked) in expanded {
            let line = dep.referenced.line();
            let dep = deployment(dep, &raw.upstream_defaults, &name, di, id_checked)
                .map_err(|e| ctx.place(line, &dpath, e))?;
            if !ids.insert(dep.id.clone()) {
                return Err(ctx.error(
                    0,
                    format!("{dpath}.id"),
                    format!("deployment id `{}` is used twice", dep.id),
                ));
            }
            deployments.push(dep);
        }
        let strategy = match &group.strategy {
            None => Strategy::default(),
            Some(text) => text
                .value
                .parse::<Strategy>()
                .map_err(|e| ctx.error(text.referenced.line(), format!("{path}.strategy"), e.to_string()))?,
        };
        models.push(ModelGroupConfig {
            name,
            deployments,
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            strategy,
        });
        pending_fallbacks.push((
            names_of(group.fallbacks),
            names_of(group.context_window_fallbacks),
            path,
        ));
    }

    // Fallbacks name other groups, so they are checked once every group is known.
    for (group, (fallbacks, context, path)) in models.iter_mut().zip(pending_fallbacks) {
        for (field, list, target) in [
            ("fallbacks", fallbacks, &mut group.fallbacks),
            (
                "context_window_fallbacks",
                context,
                &mut group.context_window_fallbacks,
            ),
        ] {
            for (i, (name, line)) in list.into_iter().enumerate() {
                if !names.contains(name.as_str()) {
                    return Err(ctx.error(
                        line,
                        format!("{path}.{field}[{i}]"),
                        format!("`{name}` is not one of the models defined under `models`"),
                    ));
                }
                if name == group.name {
                    return Err(ctx.error(
                        line,
                        format!("{path}.{field}[{i}]"),
                        "a model cannot fall back to itself",
                    ));
                }
                target.push(name);
            }
        }
    }

    let default_model = match raw.default_model {
        Some(dm) => {
            if !names.contains(dm.value.as_str()) {
                return Err(ctx.error(
                    dm.referenced.line(),
                    "default_model",
                    format!("`{}` is not one of the models defined under `models`", dm.value),
                ));
            }
            Some(dm.value)
        }
        // One model group is an unambiguous default; with several, pass-through needs a `model`.
        None if models.len() == 1 => models.first().map(|g| g.name.clone()),
        None => None,
    };

    let resilience = ResilienceConfig::try_from(raw.resilience).map_err(|e| ctx.place(0, "resilience", e))?;
    let pricing = pricing(&raw.pricing).map_err(|e| ctx.place(0, "pricing", e))?;
    let cache = match raw.cache {
        None => CacheConfig::default(),
        Some(section) => CacheConfig::try_from(section.value)
            .map_err(|e| ctx.place(section.referenced.line(), "cache", e))?,
    };
    let redis = match raw.redis {
        None => None,
        Some(section) => Some(
            super::RedisConfig::try_from(section.value)
                .map_err(|e| ctx.place(section.referenced.line(), "redis", e))?,
        ),
    };
    Ok(Config {
        cache,
        redis,
        server,
        logging,
        tracing,
        models,
        default_model,
        resilience,
        pricing,
        source: ConfigSource::File(file.unwrap_or("<inline>").to_owned()),
    })
}

/// Group names as written (trimmed), with their lines.
fn names_of(list: Vec<Spanned<String>>) -> Vec<(String, u64)> {
    list.into_iter()
        .map(|n| (n.value.trim().to_owned(), n.referenced.line()))
        .collect()
}
