#![no_main]
// Whole events only, and nothing lost: the events and the pending rest are the input, in order,
// and how the bytes were split across reads changes nothing.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (events, pending, at_once) = weir::fuzz::sse_framer(data);
    let mut joined: Vec<u8> = events.concat();
    joined.extend_from_slice(&pending);
    assert_eq!(joined, data.get(1..).unwrap_or_default(), "the framer lost or invented bytes");
    assert_eq!(events, at_once, "the events depend on how the bytes were split");
});
