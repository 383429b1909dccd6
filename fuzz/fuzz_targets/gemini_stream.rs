#![no_main]
// Every event the translation emits is a whole SSE event whose data is JSON or [DONE].
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for item in weir::fuzz::gemini_stream(data).into_iter().flatten() {
        check_events(&item);
    }
});

fn check_events(bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).expect("events are UTF-8");
    assert!(text.is_empty() || text.ends_with("\n\n"), "an event is not terminated: {text:?}");
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
            if data != "[DONE]" {
                serde_json::from_str::<serde_json::Value>(data).expect("event data is not JSON");
            }
        }
    }
}
