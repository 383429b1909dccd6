#![no_main]
// The model rewrite keeps a JSON object whose `model` is the new one and whose other fields are
// the same, in the same order.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some(rewritten) = weir::fuzz::request_body(data) else { return };
    let after: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&rewritten).expect("the rewrite is not a JSON object");
    if let Ok(before) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data) {
        // Only a `model` the body has is rewritten (the engine rewrites no other).
        if before.contains_key("model") {
            assert_eq!(after.get("model").and_then(|m| m.as_str()), Some("fuzz-model"));
        }
        for (key, value) in &before {
            if key != "model" {
                assert_eq!(after.get(key), Some(value), "field {key} changed");
            }
        }
    }
});
