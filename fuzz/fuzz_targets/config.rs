#![no_main]
// Any text: a config or an error message, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = weir::fuzz::config(data);
});
