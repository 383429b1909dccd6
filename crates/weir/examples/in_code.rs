//! A client configured in code, no YAML: two deployments of one model on the built-in offline
//! mock, a fallback model, limits and retries over the defaults, then one call and a drain.
//!
//! `cargo run -p weir --example in_code`

// An example prints its results.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use weir::{
    Client,
    api::{ChatCompletionRequest, ChatMessage},
    config::{Deployment, RateLimitConfig, RetryPolicy, Strategy},
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder()
        // Swap `Deployment::mock()` for `Deployment::openai(key)`, `::anthropic(key)`,
        // `::azure(url, key, name)` or `::openai_compatible("http://127.0.0.1:11434/v1")`.
        .model("chat", Deployment::mock().id("primary").weight(3))
        .model("chat", Deployment::mock().id("secondary"))
        .model("backup", Deployment::mock().id("backup"))
        .strategy("chat", Strategy::WeightedRandom)
        .fallbacks("chat", ["backup"])
        .rate_limits(RateLimitConfig {
            requests_per_minute: Some(600),
            ..Default::default()
        })
        .retry(RetryPolicy {
            max_retries: 1,
            ..Default::default()
        })
        .request_deadline(Duration::from_secs(30))
        .build()?;

    let reply = client
        .create_chat_completion(&ChatCompletionRequest::new(
            "chat",
            vec![ChatMessage::user("Hello from code!")],
        ))
        .await?;
    println!("{}", reply.choices[0].message.text().unwrap_or_default());
    client.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
