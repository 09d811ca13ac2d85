#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vnet_fuzz::access(data));
