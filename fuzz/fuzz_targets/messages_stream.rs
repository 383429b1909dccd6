#![no_main]
// Every Anthropic event emitted is whole and its data is JSON.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for bytes in weir::fuzz::messages_stream(data) {
        let text = std::str::from_utf8(&bytes).expect("events are UTF-8");
        for event in text.split("\n\n").filter(|e| !e.is_empty()) {
            for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                serde_json::from_str::<serde_json::Value>(data).expect("event data is not JSON");
            }
        }
    }
});
