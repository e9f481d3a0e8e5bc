#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| expertui::fuzzing::tensor_index(data));
