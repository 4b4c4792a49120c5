#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tuikuan_fuzz::targets::recon_detect(data);
});
