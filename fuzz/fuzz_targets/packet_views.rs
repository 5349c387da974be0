#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dkp_fuzz_harness::packet_views(data);
});
