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
    CacheConfig, Config, ConfigError, ConfigSource, FieldError, LoggingConfig, ModelGroupConfig,
    ResilienceConfig, ServerConfig, Strategy, TracingConfig,
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
    // serde_path_to_error tracks where in the tree a type error or an unknown key happened, so
    // the error names the field (`models[0].deployments[0].weight`), not only the line.
    let mut path = None;
    let raw: RawConfig = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(field_path(e.path()));
            e.into_inner()
        })
    })
    .map_err(|e| syntax_error(&e, path.as_deref(), file))?;
    validate(raw, text, file)
}

/// `models[0].deployments[1].weight` from the deserializer's path (serde-saphyr's `Spanned`
/// wrapper shows up as a `value` key under the field, which is not part of the file).
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for (i, segment) in path.iter().enumerate() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if is_spanned_internal(key, i) => {}
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Whether `key` at `i` is the field of serde-saphyr's `Spanned` that holds the value (a list
/// item, a section, a leaf), not a key of the file: no section of the schema has a `value` key.
fn is_spanned_internal(key: &str, i: usize) -> bool {
    key == "value" && i > 0
}

/// A parse error as `file:line: path.to.field: problem`: the parser's own message without its
/// location and source snippet (the line is ours to print), the field from the path, and for
/// an unknown key, the key itself.
fn syntax_error(err: &serde_saphyr::Error, path: Option<&str>, file: Option<&str>) -> ConfigError {
    use serde_saphyr::MessageFormatter as _;
    let line = err.location().map(|loc| loc.line() as usize).filter(|l| *l > 0);
    let message = serde_saphyr::DefaultMessageFormatter
        .format_message(err.without_snippet())
        .into_owned();
    let message = message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .trim()
        .to_owned();
    let mut field = path.filter(|p| !p.is_empty()).map(str::to_owned);
    // The path ends at the map holding an unknown key; the key is in the message.
    if let Some(unknown) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        field = Some(match field {
            Some(path) if path == unknown || path.ends_with(&format!(".{unknown}")) => path,
            Some(parent) => format!("{parent}.{unknown}"),
            None => unknown.to_owned(),
        });
    }
    ConfigError {
        file: file.map(str::to_owned),
        line,
        field,
        message: plain_type_error(&message),
    }
}

/// serde's wording for a negative or out-of-range number (`invalid value: integer `-1`,
/// expected u32`) in words a config author uses.
fn plain_type_error(message: &str) -> String {
    for (ty, what) in [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number, 0 or more"),
        ("u64", "a whole number, 0 or more"),
        ("usize", "a whole number, 0 or more"),
    ] {
        if message.ends_with(&format!("expected {ty}")) || message == format!("invalid {ty}") {
            return format!("must be {what} ({message})");
        }
    }
    message.to_owned()
}

/// Where errors are reported: the file, and its text to find a field's line in.
struct Ctx<'a> {
    file: Option<&'a str>,
    text: &'a str,
}

impl Ctx<'_> {
    /// An error on `field` (a full path) at `line` (0: unknown).
    fn error(&self, line: u64, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let field = field.into();
        let line = usize::try_from(line)
            .ok()
            .filter(|l| *l > 0)
            .or_else(|| find_key_line(self.text, 0, &field));
        ConfigError {
            file: self.file.map(str::to_owned),
            line,
            field: Some(field),
            message: message.into(),
        }
    }

    /// A section's error, placed: the section's path before the field, and the field's line:
    /// the one the section knew, else the field's key found in the text under the section's
    /// line, else the section's `line` (0: unknown).
    fn place(&self, line: u64, section: &str, error: FieldError) -> ConfigError {
        let field = error.path_under(section);
        let section_line = usize::try_from(line).ok().filter(|l| *l > 0);
        let found = error.line.or_else(|| {
            // A top-level section (`server`, `cache`) is found by its own key.
            let (start, rel) = match section_line {
                Some(l) => (l, error.field.as_str()),
                None => (0, field.as_str()),
            };
            find_key_line(self.text, start, rel)
        });
        ConfigError {
            file: self.file.map(str::to_owned),
            line: found.or(section_line),
            field: Some(field),
            message: error.message,
        }
    }
}

/// The 1-based line of `path` (`redis.url`; list indexes ignored) in block-style YAML: its
/// first key among the direct children of the section at line `start` (1-based; 0: the top of
/// the file), and so on down. When a deeper key is not written out (a flow mapping `{…}`, a
/// default), the deepest line found; `None` when not even the first key is.
fn find_key_line(text: &str, start: usize, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    // The section's line is its key (`cache:`, keys in the block below) or its first key
    // (`strategy: x`, `- provider: x`: it and its siblings); a `memory:` line can be either.
    let mut scopes = Vec::with_capacity(2);
    match start {
        0 => scopes.push((0, lines.len())),
        n => {
            let i = n - 1;
            let line = *lines.get(i)?;
            let col = key_col(line);
            let siblings_end = (i + 1..lines.len())
                .find(|&j| lines.get(j).is_some_and(|l| significant(l) && spaces(l) < col))
                .unwrap_or(lines.len());
            scopes.push((i, siblings_end));
            if line.trim_end().ends_with(':') {
                scopes.push((i + 1, block_end(&lines, i, spaces(line))));
            }
        }
    }
    scopes
        .into_iter()
        .find_map(|(lo, hi)| find_in(&lines, lo, hi, path))
}

/// Leading spaces.
fn spaces(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Where the line's key starts (after indentation and `- `).
fn key_col(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '-']).len()
}

/// Not blank, not a comment.
fn significant(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// The end of the block whose header (a key or a `- ` item) is line `i` with indentation `col`:
/// the next line indented no deeper.
fn block_end(lines: &[&str], i: usize, col: usize) -> usize {
    (i + 1..lines.len())
        .find(|&j| lines.get(j).is_some_and(|l| significant(l) && spaces(l) <= col))
        .unwrap_or(lines.len())
}

/// [`find_key_line`] within lines `lo..hi` (0-based) of a section.
fn find_in(lines: &[&str], mut lo: usize, mut hi: usize, path: &str) -> Option<usize> {
    let mut found = None;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let key = segment.split('[').next().unwrap_or(segment);
        let Some(col) = (lo..hi)
            .filter_map(|i| lines.get(i))
            .find(|l| significant(l))
            .map(|l| key_col(l))
        else {
            break;
        };
        let hit = (lo..hi).find(|&i| {
            lines.get(i).is_some_and(|l| {
                key_col(l) == col
                    && l.trim_start_matches([' ', '-'])
                        .strip_prefix(key)
                        .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
        });
        let Some(i) = hit else { break };
        found = Some(i + 1);
        lo = i + 1;
        hi = block_end(lines, i, col).min(hi);
        // `models[2]`: on into the third `- ` item of the list.
        for index in segment.split('[').skip(1) {
            let Ok(n) = index.trim_end_matches(']').parse::<usize>() else {
                break;
            };
            let items: Vec<usize> = (lo..hi)
                .filter(|&j| lines.get(j).is_some_and(|l| l.trim_start().starts_with('-')))
                .collect();
            let item_col = items.first().and_then(|&j| lines.get(j)).map(|l| spaces(l));
            let items: Vec<usize> = items
                .into_iter()
                .filter(|&j| lines.get(j).map(|l| spaces(l)) == item_col)
                .collect();
            let Some(&j) = items.get(n) else { return found };
            found = Some(j + 1);
            lo = j;
            hi = block_end(lines, j, item_col.unwrap_or_default()).min(hi);
        }
    }
    found
}

fn validate(raw: RawConfig, text: &str, file: Option<&str>) -> Result<Config, ConfigError> {
    let ctx = Ctx { file, text };
    let server = ServerConfig::try_from(raw.server).map_err(|e| ctx.place(0, "server", e))?;
    let logging = LoggingConfig::try_from(raw.logging).map_err(|e| ctx.place(0, "logging", e))?;
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
