#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pam_totp_fuzz::otpauth_base32(data));
