#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pam_totp_fuzz::gauth_import(data));
