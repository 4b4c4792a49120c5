#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tuikuan_fuzz::targets::bank_reference_id(data);
});
