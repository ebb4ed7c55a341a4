//! The fuzz targets of pam_totp, as plain functions of the input bytes.
//!
//! Each function feeds untrusted input to one parser or check and asserts what must
//! hold whatever the input: no panic, and the properties a security reviewer relies on
//! (a code is accepted only if it is right and only once; a parsed key round-trips; an
//! otpauth URI carries the names it was given and nothing else; an error does not echo
//! a key). `fuzz_targets/*.rs` hand them to libFuzzer (`fuzz/run.sh`); `tests/corpus.rs`
//! replays the checked-in corpus and a deterministic stream of inputs through them with
//! `cargo test` on stable Rust.

use pam_totp::auth::{check_answer, start_login, Login, Method, Next, Outcome};
use pam_totp::config::{Config, Duration};
use pam_totp::enroll::otpauth_uri;
use pam_totp::gauth::parse_google_authenticator;
use pam_totp::otp::{
    self, code_for_step, decode_base32, encode_base32, grouped_base32, parse_code, step_at,
    Algorithm, OtpParams,
};
use pam_totp::policy::{
    parse_host_address, policy_for, LookupError, Network, Policy, PolicyReason,
};
use pam_totp::recovery;
use pam_totp::secret::{Answer, SecretKey};
use pam_totp::store::{EnrollMode, Enrollment, SqliteStore, Store, DEFAULT_FACTOR};

/// Splits `data` at the first `sep`: (before, after). Without one, (data, empty).
fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Configuration text, then (after a NUL) a `PAM_RHOST` and group names for the policy
/// decision. A refusal is one line that names a line of the text, if any; a
/// configuration that parses must satisfy its own validation, and its durations and
/// networks must print back to the same value.
pub fn config_parse(data: &[u8]) {
    let (text, rest) = split(data, 0);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    if let Ok(d) = text.parse::<Duration>() {
        assert_eq!(d.to_string().parse::<Duration>(), Ok(d), "{text:?}");
    }
    let config = match Config::parse(text) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "{e}");
            if let Some(line) = e.line() {
                assert!(line >= 1 && line <= 1 + text.matches('\n').count(), "{e}");
            }
            return;
        }
    };
    config.validate().expect("a parsed configuration is valid");
    let t = &config.totp;
    assert!((6..=8).contains(&t.digits) && (1..=3600).contains(&t.period) && t.window <= 10);
    let p = &config.policy;
    assert!((10..=3600).contains(&p.prompt_timeout.secs()));
    for d in [
        p.grace_period,
        p.prompt_timeout,
        config.throttle.lockout,
        config.throttle.lockout_max,
    ] {
        assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
    }
    for n in &p.exempt_networks {
        assert_eq!(n.to_string().parse::<Network>().as_ref(), Ok(n));
    }
    let (rhost, groups) = split(rest, 0);
    let rhost = String::from_utf8_lossy(rhost);
    let groups = String::from_utf8_lossy(groups);
    let member_of: Vec<&str> = groups.split(',').collect();
    let _ = parse_host_address(&rhost);
    let mut is_member = |g: &str| -> Result<bool, LookupError> { Ok(member_of.contains(&g)) };
    let (policy, reason) =
        policy_for(&config.policy, Some(&rhost), &mut is_member).expect("no lookup fails here");
    match (policy, &reason) {
        (Policy::Exempt, PolicyReason::ExemptGroup(g)) => {
            assert!(config.policy.exempt_groups.contains(g) && member_of.contains(&g.as_str()))
        }
        (Policy::Exempt, PolicyReason::ExemptNetwork(n)) => {
            assert!(config.policy.exempt_networks.contains(n))
        }
        (Policy::Mandatory, PolicyReason::MandatoryHost) => assert!(config.policy.mandatory),
        (Policy::Mandatory, PolicyReason::MandatoryGroup(g)) => {
            assert!(config.policy.mandatory_groups.contains(g))
        }
        (Policy::Optional, PolicyReason::Default) => assert!(!config.policy.mandatory),
        other => panic!("inconsistent policy {other:?}"),
    }
}

/// The key every answer is checked against.
const KEY: &[u8] = b"12345678901234567890";
/// Recovery codes the fuzzed user holds: a generated-style one and an imported
/// google-authenticator scratch code.
const RECOVERY: [&str; 2] = ["abcd-efgh-jkmn-pqrs", "12345678"];
const NOW: i64 = 1_800_000_000;

/// One login's answer: byte 0 picks the digits (6 to 8), the window (0 to 2) and
/// whether the answer is built around the right code; byte 1 moves the clock (up to
/// ±127 s); the rest is what the user typed (spaces and tabs inside the right code,
/// when it is used). The answer is then checked twice against an in-memory store:
/// accepted only if it is a code within the window or a recovery code, and never
/// accepted the second time.
pub fn answer_check(data: &[u8]) {
    let [mode, shift, typed @ ..] = data else {
        return;
    };
    let digits = 6 + u32::from(mode % 3);
    let window = u64::from((mode / 3) % 3);
    let around_right_code = mode & 0x80 != 0;
    let now = NOW + i64::from(*shift as i8);
    let params = OtpParams {
        algorithm: Algorithm::Sha1,
        digits,
        period: 30,
    };
    let key = SecretKey::from_bytes(KEY.to_vec());

    let right_code_offset =
        around_right_code.then(|| i64::from(typed.first().copied().unwrap_or(0) % 5) - 2);
    let raw = if let Some(step_offset) = right_code_offset {
        // The code for a step near now, with the fuzzer's bytes as separators.
        let step = (step_at(now as u64, 30) as i64 + step_offset) as u64;
        let code = code_for_step(&key, &params, step);
        let fill: Vec<u8> = typed.iter().skip(1).copied().collect();
        let mut out = Vec::new();
        for (i, c) in code.bytes().enumerate() {
            if let Some(&f) = fill.get(i) {
                if f == b' ' || f == b'\t' {
                    out.push(f);
                }
            }
            out.push(c);
        }
        out
    } else {
        typed.to_vec()
    };
    let answer = Answer::new(raw.clone());

    // The normalisers on their own.
    let plain = answer.without_spaces();
    let expected: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| *b != b' ' && *b != b'\t')
        .collect();
    assert_eq!(plain.as_bytes(), &expected[..]);
    if let Some(v) = parse_code(plain.as_bytes(), digits) {
        assert_eq!(plain.as_bytes().len(), digits as usize);
        assert!(v < 10u32.pow(digits));
        assert_eq!(
            format!("{v:0w$}", w = digits as usize).as_bytes(),
            plain.as_bytes()
        );
    }
    let normalized = recovery::normalize(&plain);
    if let Some(n) = &normalized {
        assert!((8..=32).contains(&n.len()));
        assert!(n
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    }

    // The whole check against a store.
    let store = SqliteStore::in_memory().expect("in-memory store");
    let hashed: Vec<_> = RECOVERY
        .iter()
        .map(|c| recovery::hash_new(c).expect("recovery code"))
        .collect();
    let enrollment = Enrollment {
        name: DEFAULT_FACTOR,
        secret: &key,
        params,
        mode: EnrollMode::New,
        recovery_codes: Some(&hashed),
        confirmed_step: None,
    };
    store
        .enroll("alice", &enrollment, NOW - 3600)
        .expect("enroll");
    let mut config = Config::default();
    config.totp.window = window;
    config.throttle.max_failures = 1000;
    let login = Login {
        user: "alice",
        service: "sshd",
        rhost: Some("192.0.2.1"),
        tty: None,
    };
    let attempt = || {
        let next = start_login(
            &config,
            &store,
            &login,
            (Policy::Optional, PolicyReason::Default),
            now,
        )
        .expect("start");
        let Next::AskCode(challenge, _) = next else {
            panic!("an enrolled user is asked for a code");
        };
        check_answer(&config, &store, &login, &challenge, &answer, now, now).expect("check")
    };
    let first = attempt();
    match first {
        Outcome::Success(Method::Code) => {
            let code = parse_code(plain.as_bytes(), digits).expect("a code was accepted");
            let matched = otp::verify_code(&key, &params, code, now as u64, window);
            assert!(matched.is_some(), "accepted a code outside the window");
        }
        Outcome::Success(Method::RecoveryCode) => {
            let n = normalized.expect("a recovery code was accepted");
            let known = RECOVERY.iter().any(|c| {
                recovery::normalize(&Answer::from(*c)).is_some_and(|k| k.as_slice() == &n[..])
            });
            assert!(known, "accepted an unknown recovery code");
        }
        Outcome::Denied(_) => {}
        other => panic!("unexpected outcome {other:?}"),
    }
    let second = attempt();
    assert!(
        !matches!(second, Outcome::Success(_)),
        "the same answer was accepted twice"
    );
    if let Some(offset) = right_code_offset {
        let accepted = matches!(first, Outcome::Success(Method::Code));
        assert_eq!(
            accepted,
            offset.unsigned_abs() <= window,
            "a code {offset} steps away, window {window}: {first:?}"
        );
    }
}

/// A `~/.google_authenticator` file. What parses has a usable key, a valid period and
/// eight-digit scratch codes; an error never echoes the key line.
pub fn gauth_import(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_google_authenticator(text) {
        Ok(file) => {
            assert!(file.secret.as_bytes().len() >= 10);
            assert!((1..=3600).contains(&file.period));
            for c in &file.scratch_codes {
                assert!(c.len() == 8 && c.bytes().all(|b| b.is_ascii_digit()));
            }
            let again = decode_base32(&encode_base32(&file.secret)).expect("round trip");
            assert_eq!(again.as_bytes(), file.secret.as_bytes());
        }
        Err(why) => {
            // A key line as apps and google-authenticator write it (letters and digits
            // only) must not come back in the message, unless another line carries
            // the same text (an unknown option's name is shown).
            let first = text.lines().next().unwrap_or("").trim();
            let key_like = first.len() >= 16 && first.bytes().all(|b| b.is_ascii_alphanumeric());
            let upper = first.to_ascii_uppercase();
            let elsewhere = text.lines().skip(1).any(|l| {
                let graphic: String = l.chars().filter(|c| c.is_ascii_graphic()).collect();
                graphic.to_ascii_uppercase().contains(&upper)
            });
            if key_like && !elsewhere {
                assert!(
                    !why.to_ascii_uppercase().contains(&upper),
                    "the error echoes the key line: {why}"
                );
            }
        }
    }
}

/// Decodes a `%XX`-encoded URI component.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits after %"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Base32 text as a user or an app writes it (before the first NUL), then raw key
/// bytes, an issuer and an account name (NUL-separated) for an otpauth URI.
pub fn otpauth_base32(data: &[u8]) {
    let (text, rest) = split(data, 0);
    if let Ok(text) = std::str::from_utf8(text) {
        if let Ok(key) = decode_base32(text) {
            let len = key.as_bytes().len();
            assert!((10..=128).contains(&len), "{len} bytes");
            let encoded = encode_base32(&key);
            assert!(encoded
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
            let canonical: String = text
                .chars()
                .filter(|c| !matches!(c, ' ' | '\t' | '-' | '='))
                .map(|c| c.to_ascii_uppercase())
                .collect();
            assert_eq!(encoded.as_str(), canonical);
            let grouped: String = grouped_base32(&key).chars().filter(|c| *c != ' ').collect();
            assert_eq!(grouped, encoded.as_str());
        }
    }
    let (raw_key, rest) = split(rest, 0);
    let (issuer, account) = split(rest, 0);
    if !(10..=128).contains(&raw_key.len()) {
        return;
    }
    let key = SecretKey::from_bytes(raw_key.to_vec());
    let encoded = encode_base32(&key);
    assert_eq!(
        decode_base32(&encoded).expect("round trip").as_bytes(),
        raw_key
    );
    let issuer = String::from_utf8_lossy(issuer);
    let account = String::from_utf8_lossy(account);
    let params = OtpParams {
        algorithm: Algorithm::Sha256,
        digits: 8,
        period: 60,
    };
    let uri = otpauth_uri(&issuer, &account, &key, &params);
    // Only unreserved characters and the URI's own delimiters: no space, control
    // character or non-ASCII byte that an app or a terminal could read differently.
    assert!(uri
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%:/?&=".contains(&b)));
    let rest = uri.strip_prefix("otpauth://totp/").expect("scheme");
    let (label, query) = rest.split_once('?').expect("one query");
    assert!(!query.contains('?'));
    let (label_issuer, label_account) = label.split_once(':').expect("issuer:account");
    assert!(!label_account.contains(':'));
    assert_eq!(percent_decode(label_issuer), issuer.as_bytes());
    assert_eq!(percent_decode(label_account), account.as_bytes());
    let fields: Vec<(&str, &str)> = query
        .split('&')
        .map(|kv| kv.split_once('=').expect("key=value"))
        .collect();
    let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(names, ["secret", "issuer", "algorithm", "digits", "period"]);
    assert_eq!(fields[0].1, encoded.as_str());
    assert_eq!(percent_decode(fields[1].1), issuer.as_bytes());
    assert_eq!(fields[2].1, "SHA256");
    assert_eq!(fields[3].1, "8");
    assert_eq!(fields[4].1, "60");
}
