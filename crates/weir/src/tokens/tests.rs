//! Counting checked against `tiktoken-rs` (the test oracle), pricing lookups, costs, the ledger.

use serde_json::json;
use tiktoken_rs::{ChatCompletionRequestMessage, FunctionCall, num_tokens_from_messages};

use super::*;
use crate::{
    api::Usage,
    request::{Endpoint, RequestFacts},
};

fn oracle(encoding: Encoding) -> &'static tiktoken_rs::CoreBPE {
    match encoding {
        Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
    }
}

const SAMPLES: &[&str] = &[
    "",
    " ",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. It's 3:45pm and we'll see what they've done.",
    "fn main() {\n    let x: Vec<u64> = (0..10).map(|i| i * i).collect();\n    println!(\"{x:?}\");\n}\n",
    "def f(a, b):\n\treturn {'sum': a + b, \"diff\": a - b}  # comment\n\n\n",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY id DESC LIMIT 100;",
    "<div class=\"card\"><h1>Title</h1><p>Body &amp; more</p></div>",
    "我们的网关支持多个提供商。日本語のテキストも含まれています。한국어 문장도 있습니다.",
    "Emoji: 😀😃😄😁🤖👩‍👩‍👧‍👦🏳️‍🌈 and flags 🇫🇷🇯🇵 ✅❌",
    "Mixed: Привет мир! مرحبا بالعالم שלום עולם नमस्ते दुनिया Γειά σου Κόσμε",
    "Numbers 1234567890 3.14159 -42 1e10 0x1F 1,000,000 ١٢٣",
    "whitespace   runs\t\t\ttabs\n\n\n\nnewlines \r\n crlf      \n   trailing   ",
    "ALLCAPS camelCase snake_case kebab-case PascalCase HTTPServerError I'M YOU'RE",
    "URLs https://example.com/path?q=1&r=2#frag and emails someone@example.org",
    "JSON {\"a\":[1,2,{\"b\":null}],\"c\":\"\\u00e9\"}",
    "Combining: e\u{301} a\u{308} n\u{303} — em dash – en dash … ellipsis «quotes» „German“",
    "<|endoftext|> looks special but is counted as text <|im_start|>",
    "zero\u{200b}width\u{feff}chars and\u{a0}nbsp",
];

/// A deterministic mix of the samples and random runs, a few hundred KB.
fn corpus(seed: u64, pieces: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = String::new();
    for _ in 0..pieces {
        match rng.u8(0..6) {
            0 => {
                // A run of random ASCII printable characters and whitespace.
                for _ in 0..rng.usize(1..200) {
                    out.push(match rng.u8(0..10) {
                        0 => ' ',
                        1 => '\n',
                        _ => char::from(rng.u8(0x21..0x7f)),
                    });
                }
            }
            1 => {
                // Random CJK.
                for _ in 0..rng.usize(1..100) {
                    out.push(char::from_u32(rng.u32(0x4e00..0x9fff)).unwrap_or('字'));
                }
            }
            2 => {
                // Random emoji.
                for _ in 0..rng.usize(1..30) {
                    out.push(char::from_u32(rng.u32(0x1f300..0x1f64f)).unwrap_or('🙂'));
                }
            }
            _ => out.push_str(SAMPLES[rng.usize(0..SAMPLES.len())]),
        }
        if rng.bool() {
            out.push(' ');
        }
    }
    out
}

#[test]
fn text_counts_equal_tiktoken_on_varied_text() {
    for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
        for sample in SAMPLES {
            let expected = oracle(encoding).encode_ordinary(sample).len() as u64;
            assert_eq!(
                count_text(encoding, sample),
                expected,
                "{} on {sample:?}",
                encoding.as_str()
            );
        }
        for seed in 0..8 {
            let text = corpus(seed, 400);
            let expected = oracle(encoding).encode_ordinary(&text).len() as u64;
            assert_eq!(
                count_text(encoding, &text),
                expected,
                "{} on corpus seed {seed}",
                encoding.as_str()
            );
        }
    }
}

#[test]
fn long_input_counts_equal_tiktoken() {
    // About 1.5 MB of mixed text in one string.
    let text = corpus(42, 12_000);
    assert!(text.len() > 1_000_000, "{}", text.len());
    for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
        let expected = oracle(encoding).encode_ordinary(&text).len() as u64;
        assert_eq!(count_text(encoding, &text), expected, "{}", encoding.as_str());
    }
}

#[test]
fn counting_is_linear_on_runs_without_spaces() {
    // One pre-token of several MB: a quadratic merge loop would not finish in any reasonable time.
    let letters = "a".repeat(4 << 20);
    let count = count_text(Encoding::O200kBase, &letters);
    assert!(count > 0 && count < letters.len() as u64, "{count}");
    let mut rng = fastrand::Rng::with_seed(7);
    let random_letters: String = (0..(3 << 20)).map(|_| rng.lowercase()).collect();
    let count = count_text(Encoding::Cl100kBase, &random_letters);
    assert!(count > 0 && count <= random_letters.len() as u64, "{count}");
    let cjk: String = (0..(1 << 20))
        .map(|_| char::from_u32(rng.u32(0x4e00..0x9fff)).unwrap_or('字'))
        .collect();
    let count = count_text(Encoding::O200kBase, &cjk);
    assert!(count >= (1 << 20) / 2, "{count}");
}

fn body(value: serde_json::Value) -> RequestFacts {
    RequestFacts::parse(Endpoint::Passthrough, None, value.to_string().as_bytes()).unwrap()
}

fn msg(role: &str, content: Option<&str>, name: Option<&str>) -> ChatCompletionRequestMessage {
    ChatCompletionRequestMessage {
        role: role.to_owned(),
        content: content.map(str::to_owned),
        name: name.map(str::to_owned),
        ..Default::default()
    }
}

#[test]
fn chat_counts_equal_tiktoken_formula() {
    let conversations: Vec<Vec<ChatCompletionRequestMessage>> = vec![
        vec![msg("user", Some("Hello!"), None)],
        vec![
            msg("system", Some("You are a helpful assistant."), None),
            msg("user", Some(SAMPLES[3]), Some("alice")),
            msg("assistant", Some(SAMPLES[8]), None),
            msg("user", Some(SAMPLES[9]), Some("bob_2")),
        ],
        vec![
            // tiktoken-rs counts special-token spellings as one special token; OpenAI's API (and
            // our counter) read user text as text, so the formula check leaves them out.
            msg("developer", Some(&corpus(3, 50).replace("<|", "<")), None),
            msg("user", Some(SAMPLES[4]), None),
            ChatCompletionRequestMessage {
                role: "assistant".to_owned(),
                content: None,
                tool_calls: vec![
                    FunctionCall {
                        name: "get_weather".to_owned(),
                        arguments: "{\"city\":\"Paris\",\"unit\":\"c\"}".to_owned(),
                    },
                    FunctionCall {
                        name: "lookup".to_owned(),
                        arguments: "{\"q\":\"東京\"}".to_owned(),
                    },
                ],
                ..Default::default()
            },
            msg("tool", Some("{\"temp\": 21}"), None),
            msg("user", Some(""), None),
        ],
    ];
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "o3-mini",
        "gpt-5",
        "gpt-4",
        "gpt-3.5-turbo",
    ] {
        let encoding = encoding_for_model(model).unwrap();
        for messages in &conversations {
            let expected = num_tokens_from_messages(model, messages).unwrap() as u64;
            let wire: Vec<serde_json::Value> = messages
                .iter()
                .map(|m| {
                    let mut v = json!({"role": m.role, "content": m.content});
                    if let Some(name) = &m.name {
                        v["name"] = json!(name);
                    }
                    if !m.tool_calls.is_empty() {
                        v["tool_calls"] = m
                            .tool_calls
                            .iter()
                            .enumerate()
                            .map(|(i, c)| {
                                json!({"id": format!("call_{i}"), "type": "function",
                                       "function": {"name": c.name, "arguments": c.arguments}})
                            })
                            .collect();
                    }
                    v
                })
                .collect();
            let request = body(json!({"model": model, "messages": wire, "temperature": 0.2}));
            assert_eq!(
                count_chat(encoding, &request),
                Some(expected),
                "{model}: {wire:?}"
            );
        }
    }
}

#[test]
fn chat_content_parts_images_and_tools_are_estimated() {
    let enc = Encoding::O200kBase;
    let text_only = body(json!({"messages": [{"role": "user", "content": "Describe this."}]}));
    let base = count_chat(enc, &text_only).unwrap();
    let parts = body(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe this."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    ]}]}));
    assert_eq!(
        count_chat(enc, &parts),
        Some(base + count::IMAGE_LOW_DETAIL + count::IMAGE_HIGH_DETAIL)
    );
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let with_tools =
        body(json!({"messages": [{"role": "user", "content": "Describe this."}], "tools": tools}));
    assert_eq!(
        count_chat(enc, &with_tools),
        Some(base + count_text(enc, &tools.to_string()))
    );
    // Shapes we can't read are left to the caller's fallback.
    assert_eq!(count_chat(enc, &body(json!({"messages": "hi"}))), None);
    assert_eq!(count_chat(enc, &body(json!({"model": "x"}))), None);
    assert_eq!(
        count_chat(enc, &body(json!({"messages": [{"role": "user", "content": 5}]}))),
        None
    );
}

#[test]
fn embedding_inputs_in_every_shape() {
    let enc = Encoding::Cl100kBase;
    let raw = |v: serde_json::Value| serde_json::value::to_raw_value(&v).unwrap();
    let a = count_text(enc, SAMPLES[3]);
    let b = count_text(enc, SAMPLES[8]);
    assert_eq!(count_embedding_input(enc, &raw(json!(SAMPLES[3]))), Some(a));
    assert_eq!(
        count_embedding_input(enc, &raw(json!([SAMPLES[3], SAMPLES[8]]))),
        Some(a + b)
    );
    assert_eq!(count_embedding_input(enc, &raw(json!([1, 2, 3, 4]))), Some(4));
    assert_eq!(
        count_embedding_input(enc, &raw(json!([[1, 2], [3, 4, 5]]))),
        Some(5)
    );
    assert_eq!(count_embedding_input(enc, &raw(json!({"no": 1}))), None);
    let request = body(json!({"model": "text-embedding-3-small", "input": [SAMPLES[3], SAMPLES[8]]}));
    let estimate = estimate_input(Endpoint::Embeddings, "text-embedding-3-small", &request).unwrap();
    assert_eq!((estimate.tokens, estimate.exact), (a + b, true));
}

#[test]
fn encodings_by_longest_prefix() {
    let cases = [
        ("gpt-4o", Some(Encoding::O200kBase)),
        ("gpt-4o-mini-2024-07-18", Some(Encoding::O200kBase)),
        ("gpt-4.1-nano", Some(Encoding::O200kBase)),
        ("gpt-5", Some(Encoding::O200kBase)),
        ("gpt-5.4-mini", Some(Encoding::O200kBase)),
        ("o1", Some(Encoding::O200kBase)),
        ("o3-mini-2025-01-31", Some(Encoding::O200kBase)),
        ("o4-mini", Some(Encoding::O200kBase)),
        ("chatgpt-4o-latest", Some(Encoding::O200kBase)),
        ("GPT-4O", Some(Encoding::O200kBase)),
        ("ft:gpt-4o-mini-2024-07-18:org::abc123", Some(Encoding::O200kBase)),
        ("openai/gpt-4.1", Some(Encoding::O200kBase)),
        ("gpt-4", Some(Encoding::Cl100kBase)),
        ("gpt-4-turbo-2024-04-09", Some(Encoding::Cl100kBase)),
        ("gpt-3.5-turbo-0125", Some(Encoding::Cl100kBase)),
        ("gpt-35-turbo", Some(Encoding::Cl100kBase)),
        ("text-embedding-3-large", Some(Encoding::Cl100kBase)),
        ("text-embedding-ada-002", Some(Encoding::Cl100kBase)),
        ("claude-sonnet-4-5", None),
        ("gemini-2.5-flash", None),
        ("llama3", None),
        ("", None),
    ];
    for (model, expected) in cases {
        assert_eq!(encoding_for_model(model), expected, "{model}");
    }
}

#[test]
fn estimates_for_models_without_a_public_tokenizer_are_scaled() {
    let request = body(json!({"messages": [{"role": "user", "content": corpus(9, 40)}]}));
    let o200k = count_chat(Encoding::O200kBase, &request).unwrap();
    let est = |model| estimate_input(Endpoint::ChatCompletions, model, &request).unwrap();
    assert_eq!(est("gpt-4o").tokens, o200k);
    assert!(est("gpt-4o").exact);
    let claude = est("claude-sonnet-4-5");
    assert!(!claude.exact);
    assert_eq!(
        claude.tokens,
        (o200k as f64 * estimate::CLAUDE_FACTOR).ceil() as u64
    );
    assert_eq!(
        est("gemini-2.5-pro").tokens,
        (o200k as f64 * estimate::GEMINI_FACTOR).ceil() as u64
    );
    assert_eq!(
        est("my-local-llama").tokens,
        (o200k as f64 * estimate::UNKNOWN_FACTOR).ceil() as u64
    );
    assert_eq!(
        estimate_input(Endpoint::ImageGenerations, "gpt-4o", &request),
        None
    );
}

#[test]
fn builtin_pricing_parses_and_is_dated() {
    let table = PriceTable::builtin();
    assert!(table.entries().len() > 40, "{}", table.entries().len());
    let checked = table.checked().unwrap();
    assert_eq!(checked.len(), 10, "{checked}");
    for (name, price) in table.entries() {
        assert!(price.is_valid(), "{name}");
        assert!(price.input > 0.0, "{name}");
    }
}

#[test]
fn prices_by_exact_name_then_longest_prefix() {
    let table = PriceTable::builtin();
    let input = |model: &str| table.get(model).map(|p| p.input);
    assert_eq!(input("gpt-4o"), Some(2.50));
    assert_eq!(input("gpt-4o-2024-08-06"), Some(2.50));
    assert_eq!(
        input("gpt-4o-2024-05-13"),
        Some(5.00),
        "an exact snapshot entry wins"
    );
    assert_eq!(input("gpt-4o-mini"), Some(0.15), "not gpt-4o's price");
    assert_eq!(input("gpt-4o-mini-2024-07-18"), Some(0.15));
    assert_eq!(input("gpt-4.1-mini-2025-04-14"), Some(0.40));
    assert_eq!(input("GPT-4.1"), Some(2.00));
    assert_eq!(input("openai/gpt-5-mini"), Some(0.25));
    assert_eq!(input("ft:gpt-4.1-nano-2025-04-14:org::x1"), Some(0.10));
    assert_eq!(input("o3-mini-2025-01-31"), Some(1.10));
    assert_eq!(input("claude-sonnet-4-5-20250929"), Some(3.00));
    assert_eq!(input("claude-opus-4-1-20250805"), Some(15.00));
    assert_eq!(input("claude-3-5-haiku-20241022"), Some(0.80));
    assert_eq!(input("gemini-2.5-flash-lite-preview-06-17"), Some(0.10));
    assert_eq!(input("models/gemini-2.5-pro"), Some(1.25));
    // No entry and no boundary: no price rather than gpt-5's.
    assert_eq!(input("gpt-5.3"), None);
    assert_eq!(input("llama3"), None);
}

fn usage(value: serde_json::Value) -> Usage {
    serde_json::from_value(value).unwrap()
}

#[test]
fn cost_prices_cached_and_cache_write_tokens() {
    let gpt4o = PriceTable::builtin().get("gpt-4o").copied().unwrap();
    let plain = gpt4o.cost(&usage(json!({"prompt_tokens": 1000, "completion_tokens": 500})));
    assert!(
        (plain.usd - (1000.0 * 2.5 + 500.0 * 10.0) / 1e6).abs() < 1e-12,
        "{plain:?}"
    );
    let cached = gpt4o.cost(&usage(json!({
        "prompt_tokens": 1000, "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 800}
    })));
    assert_eq!((cached.input_tokens, cached.cached_tokens), (200, 800));
    assert!((cached.usd - (200.0 * 2.5 + 800.0 * 1.25 + 500.0 * 10.0) / 1e6).abs() < 1e-12);
    let sonnet = PriceTable::builtin().get("claude-sonnet-4-5").copied().unwrap();
    let anthropic = sonnet.cost(&usage(json!({
        "prompt_tokens": 3000, "completion_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 1500}
    })));
    assert_eq!(
        (
            anthropic.input_tokens,
            anthropic.cached_tokens,
            anthropic.cache_write_tokens
        ),
        (500, 1000, 1500)
    );
    let expected = (500.0 * 3.0 + 1000.0 * 0.30 + 1500.0 * 3.75 + 100.0 * 15.0) / 1e6;
    assert!((anthropic.usd - expected).abs() < 1e-12, "{anthropic:?}");
    // Inconsistent details never make a negative count.
    let odd = gpt4o.cost(&usage(json!({
        "prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50, "cache_creation_tokens": 50}
    })));
    assert_eq!(
        (odd.input_tokens, odd.cached_tokens, odd.cache_write_tokens),
        (0, 10, 0)
    );
}

#[test]
fn overrides_replace_and_add_prices() {
    let mut overrides = std::collections::BTreeMap::new();
    let custom = Price {
        input: 1.0,
        output: 2.0,
        cached_input: None,
        cache_write: None,
    };
    overrides.insert("GPT-4o".to_owned(), custom);
    overrides.insert("my-model".to_owned(), custom);
    let table = PriceTable::builtin().with_overrides(&overrides);
    assert_eq!(table.get("gpt-4o-2024-08-06"), Some(&custom));
    assert_eq!(table.get("my-model-v2"), Some(&custom));
    assert_eq!(table.get("gpt-4o-mini").map(|p| p.input), Some(0.15));
}

#[test]
fn ledger_totals_and_bounded_cardinality() {
    let ledger = UsageLedger::new();
    let u = usage(json!({"prompt_tokens": 100, "completion_tokens": 20,
                          "prompt_tokens_details": {"cached_tokens": 40}}));
    let cost = PriceTable::builtin().get("gpt-4o").unwrap().cost(&u);
    ledger.record_request("gpt-4o", Some("key-0"), true);
    ledger.record_attempt("dep-a", false);
    ledger.record_attempt("dep-b", true);
    ledger.record_usage("gpt-4o", "dep-b", Some("key-0"), &u, Some(&cost));
    ledger.record_request("gpt-4o", None, false);
    ledger.record_usage("other-model", "dep-b", None, &u, None);
    let snap = ledger.snapshot();
    assert_eq!((snap.total.requests, snap.total.errors), (2, 1));
    assert_eq!(snap.total.input_tokens, 200);
    assert_eq!(snap.total.cached_tokens, 80);
    assert_eq!(snap.total.unpriced_responses, 1);
    assert!((snap.total.cost_usd - cost.usd).abs() < 1e-9);
    assert_eq!(snap.by_deployment["dep-a"].errors, 1);
    assert_eq!(snap.by_deployment["dep-b"].output_tokens, 40);
    assert_eq!(snap.by_client["key-0"].requests, 1);
    assert_eq!(snap.by_client[ledger::ANONYMOUS].errors, 1);
    assert_eq!(snap.by_model["gpt-4o"].input_tokens, 100);
    serde_json::to_string(&snap).unwrap();

    for i in 0..(ledger::MAX_MODELS + 50) {
        ledger.record_request(&format!("model-{i}"), None, true);
    }
    let snap = ledger.snapshot();
    assert_eq!(
        snap.by_model.len(),
        ledger::MAX_MODELS + 1,
        "the cap plus `other`"
    );
    assert!(snap.by_model[ledger::OTHER].requests >= 50);
}

#[test]
fn config_pricing_overrides_merge_with_builtin_prices() {
    let yaml = "models:\n  - name: m\n    deployments:\n      - provider: mock\npricing:\n  gpt-4o: { output: 12.5 }\n  my-model: { input: 0.5, output: 1.5, cached_input: 0.1 }\n";
    let config = crate::Config::from_yaml(yaml, Some("p.yaml")).unwrap();
    let gpt4o = config.pricing["gpt-4o"];
    assert_eq!(
        (gpt4o.input, gpt4o.output, gpt4o.cached_input),
        (2.5, 12.5, Some(1.25))
    );
    let table = PriceTable::builtin().with_overrides(&config.pricing);
    assert_eq!(table.get("gpt-4o-2024-08-06").map(|p| p.output), Some(12.5));
    assert_eq!(table.get("my-model").map(|p| p.cached_input), Some(Some(0.1)));
}

#[test]
fn config_pricing_errors_name_the_field_and_line() {
    let base = "models:\n  - name: m\n    deployments:\n      - provider: mock\npricing:\n";
    let cases = [
        (
            "  unknown-model: { output: 1.0 }\n",
            "pricing.unknown-model.input",
            "no built-in price",
        ),
        ("  gpt-4o: { input: -1 }\n", "pricing.gpt-4o.input", ">= 0"),
        ("  gpt-4o: { inptu: 1 }\n", "inptu", "unknown field"),
    ];
    for (entry, field, message) in cases {
        let err = crate::Config::from_yaml(&format!("{base}{entry}"), Some("p.yaml")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(field), "{text}");
        assert!(text.contains(message), "{text}");
        assert_eq!(err.line, Some(6), "{text}");
    }
}
