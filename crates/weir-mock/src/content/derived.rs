//! Answers derived from the request, so a chaos driver can predict the exact text the mock sent
//! and tell a correct answer from a silently wrong one (truncated, spliced, another request's).

use serde_json::Value;

use super::embeddings::fnv1a;

/// The text of a request's last message: OpenAI/Anthropic `messages[-1].content` (a string, or
/// the `text` of its blocks) or Gemini's `contents[-1].parts[].text`, concatenated. `None` when
/// the body is not JSON or has no such text.
///
/// ```
/// let body = br#"{"messages":[{"role":"user","content":"hi"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#;
/// assert_eq!(weir_mock::content::prompt_text(body).as_deref(), Some("ab"));
/// ```
pub fn prompt_text(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let last = value
        .get("messages")
        .or_else(|| value.get("contents"))?
        .as_array()?
        .last()?;
    let mut text = String::new();
    match last.get("content") {
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(blocks)) => push_texts(&mut text, blocks),
        _ => {}
    }
    if let Some(Value::Array(parts)) = last.get("parts") {
        push_texts(&mut text, parts);
    }
    (!text.is_empty()).then_some(text)
}

fn push_texts(out: &mut String, blocks: &[Value]) {
    for text in blocks
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
    {
        out.push_str(text);
    }
}

/// The answer the mock gives to `prompt` when it derives content: a short sentence carrying a
/// hash of the prompt and its length, so any change (a lost piece, a spliced event, another
/// prompt's answer) shows.
///
/// ```
/// let a = weir_mock::content::derived_content("prompt one");
/// assert_eq!(a, weir_mock::content::derived_content("prompt one"));
/// assert_ne!(a, weir_mock::content::derived_content("prompt two"));
/// ```
pub fn derived_content(prompt: &str) -> String {
    let hash = prompt_hash(prompt);
    format!(
        "Answer {hash:016x} to a prompt of {} bytes, checked word by word.",
        prompt.len()
    )
}

/// The key the mock counts calls under for a prompt (see `MockState::calls_for_prompt`).
pub fn prompt_hash(prompt: &str) -> u64 {
    fnv1a(0x5eed, prompt.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_text_of_each_dialect() {
        let gemini = br#"{"contents":[{"role":"user","parts":[{"text":"x"},{"text":"y"}]}]}"#;
        assert_eq!(prompt_text(gemini).as_deref(), Some("xy"));
        let chat = br#"{"messages":[{"role":"user","content":"hello"}]}"#;
        assert_eq!(prompt_text(chat).as_deref(), Some("hello"));
        assert_eq!(prompt_text(b"not json"), None);
        assert_eq!(prompt_text(br#"{"messages":[]}"#), None);
        assert_eq!(prompt_text(br#"{"messages":[{"content":null}]}"#), None);
    }

    #[test]
    fn derived_content_depends_on_the_prompt() {
        let a = derived_content("p");
        assert!(a.contains(&format!("{:016x}", prompt_hash("p"))));
        assert_ne!(a, derived_content("q"));
        assert_ne!(derived_content("pq"), derived_content("qp"));
    }
}
