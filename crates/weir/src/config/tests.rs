use std::time::Duration;

use super::*;

const GOOD: &str = r#"
server:
  port: 9000
  max_body_size: 1MiB
  shutdown_timeout: 5s
logging:
  format: json
upstream_defaults:
  timeouts: { connect: 2s, read: 20s }
models:
  - name: gpt-4o
    deployments:
      - id: openai-a
        provider: openai
        base_url: http://127.0.0.1:1234/v1/
        api_key: sk-test
        model: gpt-4o-2024-08-06
        timeouts: { total: 45s }
  - name: local-*
    deployments:
      - provider: mock
"#;

#[test]
fn parses_a_full_config() {
    let c = Config::from_yaml(GOOD, Some("good.yaml")).unwrap();
    assert_eq!(c.server.port, 9000);
    assert_eq!(c.server.max_body_bytes, 1 << 20);
    assert_eq!(c.logging.format, LogFormat::Json);
    let d = &c.models[0].deployments[0];
    assert_eq!(d.base_url.as_str(), "http://127.0.0.1:1234/v1");
    assert_eq!(
        d.timeouts,
        Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(20),
            total: Duration::from_secs(45)
        }
    );
    assert_eq!(d.api_key.as_ref().unwrap().expose(), "sk-test");
    assert_eq!(c.models[1].deployments[0].id, "local#0");
    assert_eq!(c.group_for("local-llama").unwrap().name, "local-*");
    assert!(c.group_for("claude").is_none());
    assert_eq!(c.default_model, None);
}

#[test]
fn unknown_key_names_field_and_line() {
    let text = "models:\n  - name: a\n    deployments:\n      - provider: openai\n        base_url: http://x/v1\n        api_kee: sk\n";
    let err = Config::from_yaml(text, Some("c.yaml")).unwrap_err();
    assert_eq!(err.line, Some(6), "{err}");
    assert!(err.to_string().contains("api_kee"), "{err}");
}

/// Issue 18: every error is `file:line: path.to.field: problem`, whatever layer found it (the
/// parser's unknown keys and type errors, a section's own checks), with no parser snippet.
#[test]
fn parse_and_section_errors_name_the_field_path() {
    let m =
        "models:\n  - name: a\n    deployments:\n      - provider: openai\n        base_url: http://x/v1\n";
    let cases = [
        (
            format!("{m}        api_kee: sk\n"),
            "c.yaml:6: models[0].deployments[0].api_kee: unknown field `api_kee`",
        ),
        (
            format!("{m}        weight: -1\n"),
            "c.yaml:6: models[0].deployments[0].weight: must be a whole number, 0 or more",
        ),
        (
            format!("server:\n  port: 8080\n  hots: x\n{m}"),
            "c.yaml:3: server.hots: unknown field `hots`",
        ),
        (
            format!("{m}cache:\n  strategy: conservative\n  ttl: 0s\n"),
            "c.yaml:8: cache.ttl: must be at least 1s",
        ),
        (
            format!("{m}cache:\n  memory:\n    max_size: 0\n"),
            "c.yaml:8: cache.memory.max_size: must be greater than zero",
        ),
        (
            format!("{m}cache:\n  redis:\n    url: 'nope'\n"),
            "c.yaml:8: cache.redis.url: not a valid Redis URL",
        ),
        (
            format!("{m}        retry:\n          max_retries: 2\n          factor: 0.5\n"),
            "c.yaml:8: models[0].deployments[0].retry.factor:",
        ),
    ];
    for (yaml, expected) in cases {
        let err = Config::from_yaml(&yaml, Some("c.yaml")).unwrap_err().to_string();
        assert!(
            err.starts_with(expected),
            "expected `{expected}…`, got `{err}` for\n{yaml}"
        );
        assert!(!err.contains("<input>") && !err.contains("column"), "{err}");
    }
}

#[test]
fn validation_errors_name_field_and_line() {
    let text =
        "models:\n  - name: a\n    deployments:\n      - provider: openai\n        base_url: ftp://x/v1\n";
    let err = Config::from_yaml(text, Some("c.yaml")).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("models[0].deployments[0].base_url"));
    assert_eq!(err.line, Some(5));
    assert!(
        err.to_string()
            .starts_with("c.yaml:5: models[0].deployments[0].base_url:"),
        "{err}"
    );

    let dup = "models:\n  - name: a\n    deployments: [{provider: mock}]\n  - name: a\n    deployments: [{provider: mock}]\n";
    let err = Config::from_yaml(dup, None).unwrap_err();
    assert_eq!(
        (err.field.as_deref(), err.line),
        (Some("models[1].name"), Some(4)),
        "{err}"
    );

    let empty = "models:\n  - name: a\n";
    let err = Config::from_yaml(empty, None).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("models[0].deployments"), "{err}");

    let no_key = "models:\n  - name: a\n    deployments: [{provider: openai}]\n";
    let err = Config::from_yaml(no_key, None).unwrap_err();
    assert!(err.message.contains("api_key"), "{err}");

    let bad_default = "default_model: b\nmodels:\n  - name: a\n    deployments: [{provider: mock}]\n";
    let err = Config::from_yaml(bad_default, None).unwrap_err();
    assert_eq!(
        (err.field.as_deref(), err.line),
        (Some("default_model"), Some(1)),
        "{err}"
    );
}

#[test]
fn unset_env_var_is_an_error_with_line() {
    let text = "models:\n  - name: a\n    deployments:\n      - provider: openai\n        base_url: http://x/v1\n        api_key: ${WEIR_TEST_SURELY_UNSET_VAR}\n";
    let err = Config::from_yaml(text, None).unwrap_err();
    assert!(err.to_string().contains("WEIR_TEST_SURELY_UNSET_VAR"), "{err}");
    assert_eq!(err.line, Some(6), "{err}");
}

#[test]
fn zero_config_modes() {
    let mock = Config::from_env_with(|_| None).unwrap();
    assert_eq!(mock.source, ConfigSource::BuiltinMock);
    assert_eq!(mock.models[0].deployments[0].provider, ProviderKind::Mock);
    assert!(mock.group_for("anything").is_some());

    let env = |name: &str| match name {
        "OPENAI_API_KEY" => Some("sk-env".to_owned()),
        "OPENAI_BASE_URL" => Some("http://127.0.0.1:9/v1".to_owned()),
        "OPENAI_TIMEOUT" => Some("12".to_owned()),
        "OPENAI_MAX_RETRIES" => Some("5".to_owned()),
        _ => None,
    };
    let openai = Config::from_env_with(env).unwrap();
    let d = &openai.models[0].deployments[0];
    assert_eq!(
        openai.source,
        ConfigSource::Env {
            openai: true,
            anthropic: false,
            gemini: false
        }
    );
    assert_eq!(d.base_url.as_str(), "http://127.0.0.1:9/v1");
    assert_eq!(d.timeouts.total, Duration::from_secs(12));
    assert_eq!(d.timeouts.read, Duration::from_secs(12));
    assert_eq!(d.retry.max_retries, 5);

    let bad = |name: &str| (name == "OPENAI_MAX_RETRIES").then(|| "many".to_owned());
    let err = Config::from_env_with(bad).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("OPENAI_MAX_RETRIES"));
    let bad = |name: &str| match name {
        "GEMINI_API_KEY" => Some("g".to_owned()),
        "GEMINI_BASE_URL" => Some("ftp://x".to_owned()),
        _ => None,
    };
    let err = Config::from_env_with(bad).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("GEMINI_BASE_URL"));
}

#[test]
fn zero_config_routes_model_prefixes_to_each_provider_key() {
    let env = |name: &str| {
        match name {
            "OPENAI_API_KEY" => Some("sk-o"),
            "ANTHROPIC_API_KEY" => Some("sk-ant"),
            "GEMINI_API_KEY" => Some("g-key"),
            "GEMINI_BASE_URL" => Some("http://127.0.0.1:9"),
            "OPENAI_MAX_RETRIES" => Some("4"),
            _ => None,
        }
        .map(str::to_owned)
    };
    let config = Config::from_env_with(env).unwrap();
    let route = |model: &str| {
        let d = &config.group_for(model).unwrap().deployments[0];
        (
            d.provider,
            d.base_url.as_str().to_owned(),
            d.api_key.as_ref().unwrap().expose().to_owned(),
        )
    };
    assert_eq!(
        route("claude-sonnet-4-5"),
        (
            ProviderKind::Anthropic,
            "https://api.anthropic.com/".to_owned(),
            "sk-ant".to_owned()
        )
    );
    assert_eq!(
        route("gemini-2.5-flash"),
        (
            ProviderKind::Gemini,
            "http://127.0.0.1:9/".to_owned(),
            "g-key".to_owned()
        )
    );
    assert_eq!(
        route("gpt-4o"),
        (
            ProviderKind::OpenAi,
            "https://api.openai.com/v1".to_owned(),
            "sk-o".to_owned()
        )
    );
    assert!(
        config
            .models
            .iter()
            .all(|g| g.deployments[0].retry.max_retries == 4)
    );
    assert_eq!(config.default_model.as_deref(), Some("*"));
    let line = config.source.to_string();
    for part in [
        "claude-*",
        "ANTHROPIC_API_KEY",
        "gemini-*",
        "GEMINI_API_KEY",
        "OPENAI_API_KEY",
    ] {
        assert!(line.contains(part), "{line}");
    }

    // Only a Gemini key: Gemini models are served, the rest is refused naming the variable to set
    // (not the offline mock: a user who set a key wants real answers or a clear no).
    let only = |name: &str| (name == "GEMINI_API_KEY").then(|| "g".to_owned());
    let config = Config::from_env_with(only).unwrap();
    assert_eq!(config.models.len(), 1);
    assert!(config.group_for("gpt-4o").is_none());
    assert_eq!(config.default_model, None);
    let err = config.model_not_found("gpt-4o");
    assert_eq!(err.kind(), crate::ErrorKind::NotFound);
    assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
    assert!(config.source.to_string().contains("set OPENAI_API_KEY"));
    // Keys never appear in the announcement.
    assert!(!config.source.to_string().contains("g-key"));
}

#[test]
fn shipped_examples_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            // Examples reference keys through ${VAR:-...} so they validate without secrets.
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected example configs in {dir}");
}

#[test]
fn retry_and_resilience_sections() {
    let text = "upstream_defaults:\n  retry: { max_retries: 4, base_delay: 200ms }\nresilience:\n  request_deadline: 30s\n  retry_budget: { ratio: 0.5 }\nmodels:\n  - name: a\n    deployments:\n      - provider: mock\n        retry: { factor: 3 }\n";
    let c = Config::from_yaml(text, None).unwrap();
    let r = c.models[0].deployments[0].retry;
    assert_eq!(
        (r.max_retries, r.base_delay, r.factor),
        (4, Duration::from_millis(200), 3.0)
    );
    assert_eq!(c.resilience.request_deadline, Duration::from_secs(30));
    assert_eq!(c.resilience.retry_budget.ratio, 0.5);

    let bad =
        "models:\n  - name: a\n    deployments:\n      - provider: mock\n        retry: { factor: 0.5 }\n";
    let err = Config::from_yaml(bad, None).unwrap_err();
    assert_eq!(
        err.field.as_deref(),
        Some("models[0].deployments[0].retry.factor"),
        "{err}"
    );
    let bad = "resilience:\n  retry_budget: { ratio: -1 }\n";
    assert_eq!(
        Config::from_yaml(bad, None).unwrap_err().field.as_deref(),
        Some("resilience.retry_budget.ratio")
    );
    let old = "models:\n  - name: a\n    deployments:\n      - provider: mock\n        max_retries: 3\n";
    assert!(
        Config::from_yaml(old, None)
            .unwrap_err()
            .to_string()
            .contains("max_retries")
    );
}

#[test]
fn multi_key_shorthand_expands_to_one_deployment_per_key() {
    let text = "models:\n  - name: gpt-4o\n    deployments:\n      - id: oai\n        provider: openai\n        api_keys: [k1, k2, k3]\n        models: [gpt-4o, gpt-4o-2024-08-06, gpt-4o]\n        rate_limits:\n          - { requests_per_minute: 10 }\n          - { requests_per_minute: 20 }\n          - { requests_per_minute: 30 }\n";
    let c = Config::from_yaml(text, None).unwrap();
    let deps = &c.models[0].deployments;
    assert_eq!(
        deps.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["oai-1", "oai-2", "oai-3"]
    );
    assert_eq!(deps[1].api_key.as_ref().unwrap().expose(), "k2");
    assert_eq!(deps[1].model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert_eq!(
        deps[2].rate_limits.as_ref().unwrap().requests_per_minute,
        Some(30)
    );

    let unequal = "models:\n  - name: a\n    deployments:\n      - provider: openai\n        api_keys: [k1, k2, k3]\n        models: [m1, m2]\n";
    let err = Config::from_yaml(unequal, Some("c.yaml")).unwrap_err();
    assert_eq!(
        err.field.as_deref(),
        Some("models[0].deployments[0].models"),
        "{err}"
    );
    assert!(
        err.message.contains("has 2 entries but `api_keys` has 3"),
        "{err}"
    );
    // The field's own line (the deployment's before issue 18).
    assert_eq!(err.line, Some(6));

    let limits = "models:\n  - name: a\n    deployments:\n      - provider: openai\n        api_keys: [k1, k2]\n        rate_limits: [{ requests_per_minute: 1 }]\n";
    let err = Config::from_yaml(limits, None).unwrap_err();
    assert_eq!(
        err.field.as_deref(),
        Some("models[0].deployments[0].rate_limits"),
        "{err}"
    );

    let both = "models:\n  - name: a\n    deployments:\n      - provider: openai\n        api_key: k\n        api_keys: [k1]\n";
    assert!(
        Config::from_yaml(both, None)
            .unwrap_err()
            .message
            .contains("not both")
    );
}

#[test]
fn fallbacks_must_name_other_groups() {
    let ok = "models:\n  - name: a\n    fallbacks: [b]\n    context_window_fallbacks: [b]\n    deployments: [{provider: mock, weight: 3, priority: 1}]\n  - name: b\n    deployments: [{provider: mock}]\n";
    let c = Config::from_yaml(ok, None).unwrap();
    assert_eq!(c.models[0].fallbacks, ["b"]);
    assert_eq!(
        (
            c.models[0].deployments[0].weight,
            c.models[0].deployments[0].priority
        ),
        (3, 1)
    );
    assert_eq!(
        (
            c.models[1].deployments[0].weight,
            c.models[1].deployments[0].priority
        ),
        (1, 0)
    );

    let missing = "models:\n  - name: a\n    fallbacks: [nope]\n    deployments: [{provider: mock}]\n";
    let err = Config::from_yaml(missing, None).unwrap_err();
    assert_eq!(
        (err.field.as_deref(), err.line),
        (Some("models[0].fallbacks[0]"), Some(3)),
        "{err}"
    );
    let own = "models:\n  - name: a\n    fallbacks: [a]\n    deployments: [{provider: mock}]\n";
    assert!(
        Config::from_yaml(own, None)
            .unwrap_err()
            .message
            .contains("itself")
    );
}

/// Each section validates itself and reports a path relative to the section; the loader must put
/// the section's path and line in front. These are the texts the loader has always produced.
#[test]
fn every_section_places_its_errors_under_its_path_and_line() {
    let m =
        "models:\n  - name: a\n    deployments:\n      - provider: openai\n        base_url: http://x/v1\n";
    let cases = [
        (
            format!("upstream_defaults:\n  timeouts: {{ connect: 0s }}\n{m}"),
            "c.yaml:6: models[0].deployments[0].timeouts.connect: must be greater than zero",
        ),
        (
            format!("upstream_defaults:\n  pool: {{ max_connections: 0 }}\n{m}"),
            "c.yaml:6: models[0].deployments[0].pool: connection limits must be greater than zero",
        ),
        (
            format!("upstream_defaults:\n  retry: {{ base_delay: 5s, max_delay: 1s }}\n{m}"),
            "c.yaml:6: models[0].deployments[0].retry.max_delay: must not be shorter than base_delay",
        ),
        (
            format!("upstream_defaults:\n  circuit_breaker: {{ failure_threshold: 0 }}\n{m}"),
            "c.yaml:6: models[0].deployments[0].circuit_breaker: failure_threshold must be at least 1",
        ),
        (
            format!("{m}        rate_limits: {{ requests_per_second: -1, burst: 0 }}\n"),
            "c.yaml:6: models[0].deployments[0].rate_limits: requests_per_second must be a positive number, \
             got -1; burst must be at least 1",
        ),
        (
            format!(
                "upstream_defaults:\n  health_check: {{ healthy_threshold: 0 }}\n{m}        health_check: {{ enabled: true }}\n"
            ),
            // The deployment's own `health_check:` line (its section's before issue 18).
            "c.yaml:8: models[0].deployments[0].health_check: healthy_threshold must be at least 1",
        ),
        (
            format!("server:\n  api_keys: [ok, '']\n{m}"),
            "c.yaml:2: server.api_keys[1]: a gateway key cannot be empty",
        ),
        (
            format!("server:\n  client_rate_limits: {{ requests_per_minute: 0 }}\n{m}"),
            // Since issue 18 every error has its line: found in the text when the section knew none.
            "c.yaml:2: server.client_rate_limits: requests_per_minute must be at least 1",
        ),
        (
            format!("tracing:\n  sample_ratio: 2\n{m}"),
            "c.yaml:2: tracing.sample_ratio: must be between 0 and 1",
        ),
        (
            format!("resilience:\n  retry_budget: {{ window: 10ms }}\n{m}"),
            "c.yaml:2: resilience.retry_budget.window: must be at least 100ms",
        ),
        (
            format!("pricing:\n  gpt-4o: {{ cached_input: -1 }}\n{m}"),
            "c.yaml:2: pricing.gpt-4o.cached_input: must be a number >= 0 (USD per million tokens)",
        ),
        (
            format!("{m}cache:\n  redis: {{ url: 'redis://x', timeout: 1s, max_backoff: 10ms }}\n"),
            "c.yaml:7: cache.redis.max_backoff: must not be shorter than redis.timeout",
        ),
        (
            format!("{m}        id: 'bad id!'\n"),
            "c.yaml:6: models[0].deployments[0].id: use letters, digits and - _ . : / only (it appears in \
             headers and metrics)",
        ),
        (
            "models:\n  - name: a\n    deployments:\n      - id: d\n        provider: openai\n        base_url: http://x/v1\n        api_keys: [k1, k2]\n        rate_limits: [{ requests_per_minute: 1 }, { requests_per_minute: 0 }]\n".to_owned(),
            "c.yaml:8: models[0].deployments[0].api_keys[1].rate_limits: requests_per_minute must be at least 1",
        ),
    ];
    for (yaml, expected) in cases {
        let err = Config::from_yaml(&yaml, Some("c.yaml")).unwrap_err();
        assert_eq!(err.to_string(), expected, "{yaml}");
    }
    // A disabled section is not checked; a rate-limit section that limits nothing is no section.
    for ok in [
        format!(
            "upstream_defaults:\n  circuit_breaker: {{ failure_threshold: 0 }}\n{m}        circuit_breaker: {{ enabled: false }}\n"
        ),
        format!("{m}        health_check: {{ interval: 0s, enabled: false }}\n"),
        format!("{m}        rate_limits: {{ burst: 0 }}\n"),
    ] {
        Config::from_yaml(&ok, None).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn upstream_defaults_are_laid_under_every_section_key_by_key() {
    let text = "upstream_defaults:\n  timeouts: { read: 7s }\n  pool: { max_connections: 9 }\n  retry: { max_retries: 5, factor: 3 }\n  circuit_breaker: { failure_threshold: 7, window: 20s }\n  rate_limits: { requests_per_minute: 5, mode: fail_fast }\n  health_check: { interval: 5s }\nmodels:\n  - name: a\n    deployments:\n      - provider: mock\n        timeouts: { total: 9s }\n        pool: { idle_timeout: 1s }\n        retry: { max_retries: 1 }\n        circuit_breaker: { open_timeout: 3s }\n        rate_limits: { burst: 3, requests_per_second: 2 }\n        health_check: { enabled: false }\n      - provider: mock\n        rate_limits: { max_wait: 2s }\n        health_check: { timeout: 1s }\n        circuit_breaker: { enabled: false }\n";
    let c = Config::from_yaml(text, None).unwrap();
    let [first, second] = &c.models[0].deployments[..] else {
        panic!("two deployments expected");
    };
    let secs = Duration::from_secs;
    assert_eq!((first.timeouts.read, first.timeouts.total), (secs(7), secs(9)));
    assert_eq!(
        (first.pool.max_connections, first.pool.idle_timeout),
        (9, secs(1))
    );
    assert_eq!((first.retry.max_retries, first.retry.factor), (1, 3.0));
    let breaker = first.circuit_breaker.unwrap();
    assert_eq!(
        (breaker.failure_threshold, breaker.window, breaker.open_timeout),
        (7, secs(20), secs(3))
    );
    let limits = first.rate_limits.as_ref().unwrap();
    assert_eq!(
        (
            limits.requests_per_minute,
            limits.requests_per_second,
            limits.burst
        ),
        (Some(5), Some(2.0), Some(3))
    );
    assert_eq!(limits.mode, crate::config::LimitMode::FailFast);
    assert!(first.health_check.is_none());

    assert_eq!(second.retry.max_retries, 5);
    assert!(second.circuit_breaker.is_none());
    // The default's `mode: fail_fast` wins over the deployment's `max_wait` (a wait bound only
    // applies in wait mode), as it always has.
    assert_eq!(
        second.rate_limits.as_ref().unwrap().mode,
        crate::config::LimitMode::FailFast
    );
    let health = second.health_check.as_ref().unwrap();
    assert_eq!((health.interval, health.timeout), (secs(5), secs(1)));
}

/// Values sent as HTTP headers are checked when the file is loaded, so that building the engine
/// from the config cannot fail on them; the message names the field, never the secret.
#[test]
fn header_values_and_azure_names_are_checked_at_load_time() {
    let dep = |extra: &str| {
        format!(
            "models:\n  - name: a\n    deployments:\n      - provider: openai\n        base_url: http://x/v1\n{extra}"
        )
    };
    for (extra, field) in [
        ("        api_key: \"sk-se\\ncret\"\n", "api_key"),
        ("        organization: \"org\\u0001\"\n", "organization"),
        ("        project: \"p\\r\"\n", "project"),
    ] {
        let err = Config::from_yaml(&dep(extra), Some("c.yaml")).unwrap_err();
        assert_eq!(
            err.field.as_deref(),
            Some(format!("models[0].deployments[0].{field}").as_str()),
            "{err}"
        );
        // The field's own line (the deployment's before issue 18).
        assert_eq!(err.line, Some(6), "{err}");
        assert!(!err.to_string().contains("cret"), "{err}");
    }
    // The mock provider sends no headers; other providers do not send organization or project.
    let ok = "models:\n  - name: a\n    deployments:\n      - provider: mock\n        api_key: \"a\\nb\"\n      - provider: anthropic\n        api_key: k\n        organization: \"o\\u0001\"\n";
    Config::from_yaml(ok, None).unwrap_or_else(|e| panic!("{e}"));

    let azure = "models:\n  - name: a\n    deployments:\n      - provider: azure\n        base_url: https://r.openai.azure.com\n        model: ../x\n";
    let err = Config::from_yaml(azure, None).unwrap_err();
    assert_eq!(
        err.field.as_deref(),
        Some("models[0].deployments[0].model"),
        "{err}"
    );
    assert!(err.message.contains("not a valid Azure deployment name"), "{err}");
}

#[test]
fn multi_key_shorthand_without_an_id_gets_generated_ids() {
    let text =
        "models:\n  - name: gpt-4o\n    deployments:\n      - provider: openai\n        api_keys: [k1, k2]\n";
    let c = Config::from_yaml(text, Some("k.yaml")).unwrap();
    let ids: Vec<&str> = c.models[0].deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["gpt-4o#0-1", "gpt-4o#0-2"]);
    // A written id is still checked, once, before the per-key suffixes.
    let bad = "models:\n  - name: a\n    deployments:\n      - id: \"bad id\"\n        provider: openai\n        api_keys: [k1, k2]\n";
    let err = Config::from_yaml(bad, Some("k.yaml")).unwrap_err();
    assert!(err.to_string().contains("use letters, digits"), "{err}");
}
