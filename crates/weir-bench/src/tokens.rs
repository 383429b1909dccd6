//! `--scenario tokens`: token-counting throughput, Weir's counter (`bpe-openai`, through
//! `weir::tokens`) beside `tiktoken-rs` in the same run, and the per-request cost of the input
//! estimate the engine makes for rate limits.
//!
//! The corpus is generated deterministically (a fixed seed): English prose, source code, CJK text
//! and emoji in equal shares by bytes, cut into documents of 1–16 KB, `--tokens-corpus-mb` in all.
//! Each counter counts every document (`o200k_base` and `cl100k_base` in turn); one untimed pass
//! warms the vocabularies, then `--tokens-repetitions` timed passes, of which the median is
//! reported as tokens/s and MB/s. Both counters must agree on every document's count (the run
//! fails otherwise): `tiktoken-rs` counts ordinary text here (`encode_ordinary`), as Weir does.
//!
//! The per-request rows time the exact count of chat bodies of several sizes (`count_chat`, what
//! `weir::tokens::estimate_input` runs; the body is parsed once beforehand, as the engine already
//! has it parsed): what exact counting adds to a request before it is routed. The `counted` column
//! says whether the engine counts a body that size (above `MAX_COUNTED_BYTES` it keeps its byte
//! estimate).

use std::{hint::black_box, path::Path};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use tokio::time::Instant;
use weir::{
    Endpoint,
    tokens::{Encoding, count_chat, count_text, estimate_input},
};

use crate::report::Machine;

/// File name of the tokens report, written next to `--json`.
pub const JSON_FILE: &str = "tokens.json";

/// The settings of a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TokensSettings {
    /// Corpus size in MB (10^6 bytes).
    pub corpus_mb: u32,
    /// Timed passes per counter and encoding.
    pub repetitions: usize,
}

/// One counter on one encoding.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    /// `weir (bpe-openai)` or `tiktoken-rs`.
    pub counter: &'static str,
    /// `o200k_base` or `cl100k_base`.
    pub encoding: &'static str,
    /// Tokens in the corpus.
    pub tokens: u64,
    /// Median over the repetitions.
    pub tokens_per_sec: f64,
    /// Corpus bytes per second (10^6).
    pub mb_per_sec: f64,
    /// Median seconds for the whole corpus.
    pub seconds: f64,
}

/// The estimate on one request size.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRow {
    /// Size of the chat body.
    pub body_bytes: usize,
    /// Input tokens estimated (exact, `gpt-4o`).
    pub input_tokens: u64,
    /// Median microseconds per estimate.
    pub micros_per_request: f64,
    /// Whether the engine counts a body this size (else it keeps the byte estimate).
    pub counted_by_engine: bool,
}

/// The report written to `tokens.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TokensReport {
    /// Where it ran.
    pub machine: Machine,
    /// The flags.
    pub settings: TokensSettings,
    /// Corpus bytes.
    pub corpus_bytes: usize,
    /// Documents in the corpus.
    pub documents: usize,
    /// Throughput rows.
    pub throughput: Vec<ThroughputRow>,
    /// Per-request estimate cost rows.
    pub per_request: Vec<RequestRow>,
    /// Milliseconds the first count took per encoding (loading the vocabulary; once per process).
    pub vocabulary_load_ms: Vec<(&'static str, f64)>,
}

const WORDS: &[&str] = &[
    "the",
    "gateway",
    "routes",
    "requests",
    "to",
    "several",
    "providers",
    "and",
    "counts",
    "tokens",
    "before",
    "it",
    "reserves",
    "capacity",
    "under",
    "rate",
    "limits",
    "a",
    "model",
    "answers",
    "with",
    "usage",
    "which",
    "reconciles",
    "estimate",
    "cost",
    "of",
    "each",
    "response",
    "is",
    "priced",
    "per",
    "million",
    "cached",
    "input",
    "output",
    "streaming",
    "clients",
    "receive",
    "events",
    "while",
    "upstream",
    "latency",
    "varies",
    "retry",
    "budget",
    "circuit",
    "breaker",
    "opens",
    "after",
    "failures",
    "fallback",
    "groups",
    "take",
    "over",
    "when",
    "deployments",
    "are",
    "unavailable",
    "configuration",
    "reload",
    "metrics",
    "traces",
    "logs",
    "It's",
    "we'll",
    "they've",
    "don't",
    "2024",
    "3.5",
    "100",
    "OpenAI",
    "Anthropic",
    "Gemini",
    "HTTP/2",
];

const CODE: &[&str] = &[
    "fn main() {\n    let mut total: u64 = 0;\n",
    "    for (i, item) in items.iter().enumerate() {\n        total += item.len() as u64 * i as u64;\n    }\n",
    "impl Display for Error {\n    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {\n        write!(f, \"{}\", self.message)\n    }\n}\n",
    "def handler(event, context):\n    body = json.loads(event[\"body\"])\n    return {\"statusCode\": 200, \"body\": json.dumps(body)}\n",
    "const res = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers, body });\n",
    "SELECT u.id, COUNT(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.id;\n",
    "    if err != nil {\n        return nil, fmt.Errorf(\"decode: %w\", err)\n    }\n",
    "<div class=\"row\"><span>{{ item.name }}</span><button @click=\"remove(item)\">x</button></div>\n",
];

const CJK_PUNCT: &[char] = &['。', '、', '，', '「', '」', '！', '？'];

fn prose(rng: &mut fastrand_lite::Rng, out: &mut String, bytes: usize) {
    let start = out.len();
    while out.len() - start < bytes {
        let sentence = 6 + rng.below(14);
        for i in 0..sentence {
            let word = WORDS[rng.below(WORDS.len())];
            if i == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(chars.as_str());
                }
            } else {
                out.push(' ');
                out.push_str(word);
            }
        }
        out.push_str(if rng.below(8) == 0 { ".\n\n" } else { ". " });
    }
}

fn code(rng: &mut fastrand_lite::Rng, out: &mut String, bytes: usize) {
    let start = out.len();
    while out.len() - start < bytes {
        out.push_str(CODE[rng.below(CODE.len())]);
    }
}

fn cjk(rng: &mut fastrand_lite::Rng, out: &mut String, bytes: usize) {
    let start = out.len();
    while out.len() - start < bytes {
        // Common CJK ideographs, some kana and hangul, with punctuation every so often.
        let c = match rng.below(10) {
            0..=5 => char::from_u32(0x4e00 + rng.below(0x1000) as u32),
            6 | 7 => char::from_u32(0x3041 + rng.below(0x56) as u32),
            8 => char::from_u32(0xac00 + rng.below(0x2000) as u32),
            _ => Some(CJK_PUNCT[rng.below(CJK_PUNCT.len())]),
        };
        out.push(c.unwrap_or('字'));
    }
}

fn emoji(rng: &mut fastrand_lite::Rng, out: &mut String, bytes: usize) {
    let start = out.len();
    while out.len() - start < bytes {
        out.push(char::from_u32(0x1f300 + rng.below(0x350) as u32).unwrap_or('🙂'));
        if rng.below(4) == 0 {
            out.push(' ');
            out.push_str(WORDS[rng.below(WORDS.len())]);
            out.push(' ');
        }
    }
}

/// A tiny deterministic generator (xorshift), so the corpus is the same in every run and build.
mod fastrand_lite {
    pub struct Rng(u64);
    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed.max(1))
        }
        pub fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
    }
}

/// The mixed corpus, as documents of 1–16 KB.
pub fn corpus(total_bytes: usize) -> Vec<String> {
    let mut rng = fastrand_lite::Rng::new(0x5eed);
    let mut docs = Vec::new();
    let mut size = 0;
    let mut kind = 0;
    while size < total_bytes {
        let bytes = 1024 + rng.below(15 * 1024);
        let mut doc = String::with_capacity(bytes + 64);
        match kind % 4 {
            0 => prose(&mut rng, &mut doc, bytes),
            1 => code(&mut rng, &mut doc, bytes),
            2 => cjk(&mut rng, &mut doc, bytes),
            _ => emoji(&mut rng, &mut doc, bytes),
        }
        kind += 1;
        size += doc.len();
        docs.push(doc);
    }
    docs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn time_passes(repetitions: usize, mut pass: impl FnMut() -> u64) -> (u64, f64) {
    let tokens = pass(); // untimed: loads the vocabularies, warms caches
    let mut seconds = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        let started = Instant::now();
        black_box(pass());
        seconds.push(started.elapsed().as_secs_f64());
    }
    (tokens, median(seconds))
}

/// Runs the benchmark, prints the table and writes the JSON report to `path`.
pub fn run(settings: &TokensSettings, path: &Path) -> Result<()> {
    // First: what the first count in a process costs (the vocabulary is loaded lazily).
    let vocabulary_load_ms: Vec<(&'static str, f64)> = [Encoding::O200kBase, Encoding::Cl100kBase]
        .into_iter()
        .map(|encoding| {
            let started = Instant::now();
            black_box(count_text(encoding, "warm up"));
            (encoding.as_str(), started.elapsed().as_secs_f64() * 1e3)
        })
        .collect();
    let docs = corpus(settings.corpus_mb as usize * 1_000_000);
    let bytes: usize = docs.iter().map(String::len).sum();
    eprintln!(
        "tokens bench: {} documents, {:.1} MB, {} repetitions",
        docs.len(),
        bytes as f64 / 1e6,
        settings.repetitions
    );
    let mut throughput = Vec::new();
    for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
        let oracle = match encoding {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        };
        // Both must agree, document by document, before their speeds mean anything.
        for (i, doc) in docs.iter().enumerate() {
            let (ours, theirs) = (
                count_text(encoding, doc),
                oracle.encode_ordinary(doc).len() as u64,
            );
            if ours != theirs {
                bail!(
                    "{}: document {i} counts {ours} tokens in Weir and {theirs} in tiktoken-rs",
                    encoding.as_str()
                );
            }
        }
        let weir = time_passes(settings.repetitions, || {
            docs.iter().map(|d| count_text(encoding, d)).sum()
        });
        let tiktoken = time_passes(settings.repetitions, || {
            docs.iter().map(|d| oracle.encode_ordinary(d).len() as u64).sum()
        });
        for (counter, (tokens, seconds)) in [("weir (bpe-openai)", weir), ("tiktoken-rs", tiktoken)] {
            throughput.push(ThroughputRow {
                counter,
                encoding: encoding.as_str(),
                tokens,
                tokens_per_sec: tokens as f64 / seconds.max(1e-9),
                mb_per_sec: bytes as f64 / 1e6 / seconds.max(1e-9),
                seconds,
            });
        }
    }

    let mut per_request = Vec::new();
    for size in [1_000usize, 10_000, 100_000, 1_000_000] {
        // A system prompt and a user message of mixed text, `size` bytes in all.
        let text: String = docs.concat().chars().take(size).collect();
        let body = serde_json::json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": text},
            ],
            "max_tokens": 256,
        })
        .to_string();
        let parsed = weir::RequestFacts::parse(Endpoint::Passthrough, None, body.as_bytes())
            .context("parsing the request body")?;
        // `count_chat` is what `estimate_input` runs for bodies under its size cap; timed directly
        // so the larger rows show what counting them would cost.
        let estimate = || count_chat(Encoding::O200kBase, &parsed);
        let counted = estimate_input(Endpoint::ChatCompletions, "gpt-4o", &parsed).is_some();
        let input_tokens = estimate().unwrap_or(0);
        let iterations = (2_000_000 / size).clamp(3, 2000);
        let mut micros = Vec::new();
        for _ in 0..settings.repetitions.max(3) {
            let started = Instant::now();
            for _ in 0..iterations {
                black_box(estimate());
            }
            micros.push(started.elapsed().as_secs_f64() * 1e6 / iterations as f64);
        }
        per_request.push(RequestRow {
            body_bytes: body.len(),
            input_tokens,
            micros_per_request: median(micros),
            counted_by_engine: counted,
        });
    }

    println!(
        "\nToken counting throughput ({:.1} MB mixed corpus: prose, code, CJK, emoji)",
        bytes as f64 / 1e6
    );
    println!(
        "{:<20} {:<12} {:>12} {:>14} {:>10}",
        "counter", "encoding", "tokens", "tokens/s", "MB/s"
    );
    for row in &throughput {
        println!(
            "{:<20} {:<12} {:>12} {:>14.0} {:>10.2}",
            row.counter, row.encoding, row.tokens, row.tokens_per_sec, row.mb_per_sec
        );
    }
    for (encoding, ms) in &vocabulary_load_ms {
        println!("first count (vocabulary load), {encoding}: {ms:.1} ms");
    }
    println!("\nPer-request input estimate (gpt-4o chat body, exact count)");
    println!(
        "{:>12} {:>12} {:>14} {:>10}",
        "body bytes", "tokens", "µs/request", "counted"
    );
    for row in &per_request {
        println!(
            "{:>12} {:>12} {:>14.1} {:>10}",
            row.body_bytes,
            row.input_tokens,
            row.micros_per_request,
            if row.counted_by_engine { "yes" } else { "no (cap)" }
        );
    }

    let report = TokensReport {
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
        },
        settings: *settings,
        corpus_bytes: bytes,
        documents: docs.len(),
        throughput,
        per_request,
        vocabulary_load_ms,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report).context("serializing tokens report")?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("tokens report written to {}", path.display());
    Ok(())
}
