#![no_main]
// What the translation produced is JSON.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(out) = weir::fuzz::messages_request(data) {
        serde_json::from_slice::<serde_json::Value>(&out).expect("translated body is not JSON");
    }
});
