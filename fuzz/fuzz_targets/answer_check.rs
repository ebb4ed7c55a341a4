#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pam_totp_fuzz::answer_check(data));
