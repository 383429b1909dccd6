//! A chat completion and a streamed one through the library, no gateway involved.
//!
//! Run: `cargo run -p weir --example chat` — offline on the built-in mock provider, or against
//! OpenAI when `OPENAI_API_KEY` is set. Pass a config file to use it instead:
//! `cargo run -p weir --example chat -- examples/minimal.yaml`.

// An example prints its results.
#![allow(clippy::print_stdout)]

use std::io::Write;

use futures::StreamExt;
use weir::{
    Client, Config,
    api::{ChatCompletionRequest, ChatMessage},
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (config, model) = match std::env::args().nth(1) {
        Some(path) => {
            let config = Config::load(path)?;
            let model = config.models.first().map(|m| m.name.clone()).unwrap_or_default();
            (config, model)
        }
        None => (Config::from_env()?, "gpt-4o-mini".to_owned()),
    };
    println!("{}", config.source);
    let client = Client::new(config);

    let request = ChatCompletionRequest::new(
        model,
        vec![
            ChatMessage::system("You answer in one sentence."),
            ChatMessage::user("What is a weir?"),
        ],
    );
    let reply = client.create_chat_completion(&request).await?;
    println!(
        "reply: {}",
        reply
            .choices
            .first()
            .and_then(|c| c.message.text())
            .unwrap_or("<no text>")
    );
    if let Some(usage) = reply.usage {
        println!(
            "usage: {} prompt + {} completion tokens",
            usage.prompt_tokens, usage.completion_tokens
        );
    }

    print!("streamed: ");
    let mut stream = client.create_chat_completion_stream(&request).await?;
    while let Some(chunk) = stream.next().await {
        for choice in chunk?.choices {
            print!("{}", choice.delta.content.unwrap_or_default());
            std::io::stdout().flush()?;
        }
    }
    println!();
    Ok(())
}
