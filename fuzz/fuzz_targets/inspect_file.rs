#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| expertui::fuzzing::inspect_file(data));
