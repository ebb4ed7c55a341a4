//! The decision logic against an in-memory store, with time passed in.

use super::*;
use crate::config::Duration;
use crate::otp::{code_for_step, step_at, Algorithm, OtpParams};
use crate::recovery;
use crate::secret::SecretKey;
use crate::store::{EnrollMode, Enrollment, SqliteStore, DEFAULT_FACTOR};

const NOW: i64 = 1_800_000_000;

fn login<'a>(user: &'a str, rhost: Option<&'a str>) -> Login<'a> {
    Login {
        user,
        service: "sshd",
        rhost,
        tty: Some("ssh"),
    }
}

fn key() -> SecretKey {
    SecretKey::from_bytes(b"12345678901234567890".to_vec())
}

fn params() -> OtpParams {
    OtpParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

fn enrolled_store(recovery_codes: &[&str]) -> SqliteStore {
    let store = SqliteStore::in_memory().unwrap();
    let hashed: Vec<_> = recovery_codes
        .iter()
        .map(|c| recovery::hash_new(c).unwrap())
        .collect();
    store
        .enroll(
            "alice",
            &Enrollment {
                name: DEFAULT_FACTOR,
                secret: &key(),
                params: params(),
                mode: EnrollMode::New,
                recovery_codes: Some(&hashed),
                confirmed_step: None,
            },
            NOW - 1000,
        )
        .unwrap();
    store
}

fn code_at_offset(steps: i64) -> Answer {
    let step = step_at(NOW as u64, 30) as i64 + steps;
    Answer::from(code_for_step(&key(), &params(), step as u64).as_str())
}

fn optional() -> (Policy, PolicyReason) {
    (Policy::Optional, PolicyReason::Default)
}

fn mandatory() -> (Policy, PolicyReason) {
    (Policy::Mandatory, PolicyReason::MandatoryHost)
}

/// Runs one whole login: start, and if asked, answer.
fn attempt(
    config: &Config,
    store: &SqliteStore,
    l: &Login<'_>,
    answer: &Answer,
    now: i64,
) -> Outcome {
    match start_login(config, store, l, optional(), now).unwrap() {
        Next::AskCode(challenge, _) => {
            check_answer(config, store, l, &challenge, answer, now, now).unwrap()
        }
        // Locked already: refused before any prompt.
        Next::Done(outcome @ Outcome::Denied(DenyReason::Throttled { .. }), _) => outcome,
        other => panic!("expected a prompt, got {other:?}"),
    }
}

#[test]
fn current_code_passes_once() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let l = login("alice", Some("192.0.2.1"));
    assert_eq!(
        attempt(&config, &store, &l, &code_at_offset(0), NOW),
        Outcome::Success(Method::Code)
    );
    // The same code again, and an earlier one, are replays.
    assert_eq!(
        attempt(&config, &store, &l, &code_at_offset(0), NOW),
        Outcome::Denied(DenyReason::Replayed)
    );
    assert_eq!(
        attempt(&config, &store, &l, &code_at_offset(-1), NOW),
        Outcome::Denied(DenyReason::Replayed)
    );
    // A later step inside the window is still accepted.
    assert_eq!(
        attempt(&config, &store, &l, &code_at_offset(1), NOW),
        Outcome::Success(Method::Code)
    );
}

#[test]
fn codes_outside_the_window_fail() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let l = login("alice", None);
    for offset in [-3, -2, 2, 3] {
        assert_eq!(
            attempt(&config, &store, &l, &code_at_offset(offset), NOW),
            Outcome::Denied(DenyReason::WrongCode),
            "offset {offset}"
        );
    }
}

#[test]
fn spaces_inside_the_code_are_ignored() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let code = code_at_offset(0);
    let spaced = format!(
        " {} {} ",
        std::str::from_utf8(&code.as_bytes()[..3]).unwrap(),
        std::str::from_utf8(&code.as_bytes()[3..]).unwrap()
    );
    let l = login("alice", None);
    assert_eq!(
        attempt(&config, &store, &l, &Answer::from(spaced.as_str()), NOW),
        Outcome::Success(Method::Code)
    );
}

#[test]
fn bad_answers_are_plain_failures() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let l = login("alice", Some("192.0.2.9"));
    let huge = "1".repeat(100_000);
    let answers: [&[u8]; 7] = [
        b"",
        b"   ",
        huge.as_bytes(),
        b"12\x0034",
        "１２３４５６".as_bytes(),
        b"abcdef",
        b"\xff\xfe\xfd",
    ];
    for a in answers {
        let outcome = attempt(&config, &store, &l, &Answer::new(a.to_vec()), NOW + 10_000);
        assert!(
            matches!(outcome, Outcome::Denied(_)),
            "{:?}: {outcome:?}",
            String::from_utf8_lossy(&a[..a.len().min(10)])
        );
    }
}

#[test]
fn recovery_codes_work_once() {
    let config = Config::default();
    let store = enrolled_store(&["abcd-efgh-jkmn-pqrs", "2345-6789-abcd-efgh"]);
    let l = login("alice", None);
    let code = Answer::from("ABCD EFGH JKMN PQRS");
    assert_eq!(
        attempt(&config, &store, &l, &code, NOW),
        Outcome::Success(Method::RecoveryCode)
    );
    assert_eq!(store.recovery_codes_left("alice").unwrap(), 1);
    assert_eq!(
        attempt(&config, &store, &l, &code, NOW),
        Outcome::Denied(DenyReason::WrongCode)
    );
    assert_eq!(
        attempt(
            &config,
            &store,
            &l,
            &Answer::from("wxyz-wxyz-wxyz-wxyz"),
            NOW
        ),
        Outcome::Denied(DenyReason::WrongCode)
    );
}

#[test]
fn eight_digit_scratch_codes_are_recovery_codes() {
    let config = Config::default();
    let store = enrolled_store(&["12345678"]);
    let l = login("alice", None);
    assert_eq!(
        attempt(&config, &store, &l, &Answer::from("12345678"), NOW),
        Outcome::Success(Method::RecoveryCode)
    );
}

#[test]
fn throttle_per_source_with_doubling() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let attacker = login("alice", Some("203.0.113.66"));
    let wrong = Answer::from("000000");
    for _ in 0..5 {
        assert_eq!(
            attempt(&config, &store, &attacker, &wrong, NOW),
            Outcome::Denied(DenyReason::WrongCode)
        );
    }
    // Locked: refused without a prompt, and the notice says how long to wait.
    match start_login(&config, &store, &attacker, optional(), NOW + 1).unwrap() {
        Next::Done(outcome, notice) => {
            assert_eq!(
                outcome,
                Outcome::Denied(DenyReason::Throttled { wait_secs: 59 })
            );
            assert_eq!(
                notice,
                Some(Notice::Error(
                    "Too many failed attempts: try again in 59 s.".into()
                ))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        attempt(&config, &store, &attacker, &code_at_offset(0), NOW + 1),
        Outcome::Denied(DenyReason::Throttled { wait_secs: 59 })
    );
    // Another source is not affected.
    let user = login("alice", Some("198.51.100.1"));
    assert_eq!(
        attempt(&config, &store, &user, &code_at_offset(0), NOW + 1),
        Outcome::Success(Method::Code)
    );
    // After the wait one more failure locks for twice as long.
    assert_eq!(
        attempt(&config, &store, &attacker, &wrong, NOW + 60),
        Outcome::Denied(DenyReason::WrongCode)
    );
    assert_eq!(
        attempt(&config, &store, &attacker, &code_at_offset(2), NOW + 61),
        Outcome::Denied(DenyReason::Throttled { wait_secs: 119 })
    );
}

#[test]
fn success_clears_the_pair() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let l = login("alice", Some("192.0.2.1"));
    for _ in 0..4 {
        attempt(&config, &store, &l, &Answer::from("000000"), NOW);
    }
    assert_eq!(
        attempt(&config, &store, &l, &code_at_offset(0), NOW),
        Outcome::Success(Method::Code)
    );
    for _ in 0..4 {
        assert_eq!(
            attempt(&config, &store, &l, &Answer::from("000000"), NOW),
            Outcome::Denied(DenyReason::WrongCode)
        );
    }
}

#[test]
fn user_ceiling_across_sources() {
    let mut config = Config::default();
    config.throttle.user_max_failures = 6;
    let store = enrolled_store(&[]);
    for i in 0..6 {
        let rhost = format!("203.0.113.{i}");
        let l = login("alice", Some(&rhost));
        assert_eq!(
            attempt(&config, &store, &l, &Answer::from("000000"), NOW),
            Outcome::Denied(DenyReason::WrongCode)
        );
    }
    let fresh = login("alice", Some("198.51.100.1"));
    assert_eq!(
        attempt(&config, &store, &fresh, &code_at_offset(0), NOW + 100),
        Outcome::Denied(DenyReason::Throttled { wait_secs: 3500 })
    );
    store.unlock("alice").unwrap();
    // NOW + 100 is three steps later.
    assert_eq!(
        attempt(&config, &store, &fresh, &code_at_offset(3), NOW + 100),
        Outcome::Success(Method::Code)
    );
}

#[test]
fn unenrolled_users() {
    let store = SqliteStore::in_memory().unwrap();
    let l = login("bob", None);
    let mut config = Config::default();
    let done = |next: Next| match next {
        Next::Done(o, n) => (o, n),
        other => panic!("{other:?}"),
    };
    // Optional: ignore, never success.
    let (o, _) = done(start_login(&config, &store, &l, optional(), NOW).unwrap());
    assert_eq!(o, Outcome::Ignore(IgnoreReason::NotEnrolled));
    // Mandatory without grace: refused, with a message for the user.
    let (o, n) = done(start_login(&config, &store, &l, mandatory(), NOW).unwrap());
    assert_eq!(
        o,
        Outcome::Denied(DenyReason::NotEnrolled(PolicyReason::MandatoryHost))
    );
    assert!(matches!(n, Some(Notice::Error(t)) if t.contains("administrator")));
    // Mandatory with a grace period counted from the first sighting.
    config.policy.grace_period = Duration(7 * 86_400);
    let (o, n) = done(start_login(&config, &store, &l, mandatory(), NOW).unwrap());
    assert_eq!(
        o,
        Outcome::Ignore(IgnoreReason::GracePeriod {
            until: NOW + 7 * 86_400
        })
    );
    assert!(
        matches!(n, Some(Notice::Info(t)) if t.contains("totp-admin enroll") && t.contains("2027-01-22"))
    );
    let (o, _) = done(start_login(&config, &store, &l, mandatory(), NOW + 7 * 86_400 - 1).unwrap());
    assert!(matches!(
        o,
        Outcome::Ignore(IgnoreReason::GracePeriod { .. })
    ));
    let (o, _) = done(start_login(&config, &store, &l, mandatory(), NOW + 7 * 86_400).unwrap());
    assert!(matches!(o, Outcome::Denied(DenyReason::NotEnrolled(_))));
    // Past grace with enrollment at login: enroll now.
    config.policy.enroll_at_login = true;
    assert!(matches!(
        start_login(&config, &store, &l, mandatory(), NOW + 8 * 86_400).unwrap(),
        Next::EnrollNow
    ));
}

#[test]
fn exempt_is_ignored_without_the_store() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let l = login("alice", None);
    let next = start_login(
        &config,
        &store,
        &l,
        (Policy::Exempt, PolicyReason::ExemptGroup("svc".into())),
        NOW,
    );
    assert!(matches!(
        next.unwrap(),
        Next::Done(Outcome::Ignore(IgnoreReason::Exempt(_)), None)
    ));
}

#[test]
fn failmode() {
    assert_eq!(
        unavailable(FailMode::Secure, "x".into()),
        Outcome::Unavailable("x".into())
    );
    assert_eq!(
        unavailable(FailMode::Open, "x".into()),
        Outcome::Ignore(IgnoreReason::FailOpen("x".into()))
    );
}

#[test]
fn other_algorithms_and_digits() {
    for (alg, digits, period) in [
        (Algorithm::Sha256, 8, 60),
        (Algorithm::Sha512, 7, 15),
        (Algorithm::Sha1, 8, 30),
    ] {
        let store = SqliteStore::in_memory().unwrap();
        let p = OtpParams {
            algorithm: alg,
            digits,
            period,
        };
        store
            .enroll(
                "carol",
                &Enrollment {
                    name: DEFAULT_FACTOR,
                    secret: &key(),
                    params: p,
                    mode: EnrollMode::New,
                    recovery_codes: None,
                    confirmed_step: None,
                },
                NOW,
            )
            .unwrap();
        let code = code_for_step(&key(), &p, step_at(NOW as u64, period));
        let l = login("carol", None);
        assert_eq!(
            attempt(
                &Config::default(),
                &store,
                &l,
                &Answer::from(code.as_str()),
                NOW
            ),
            Outcome::Success(Method::Code),
            "{alg} {digits} {period}"
        );
    }
}

#[test]
fn dates() {
    assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
    assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
    assert_eq!(format_utc(1_800_000_000), "2027-01-15 08:00 UTC");
}

/// Starts a login and returns the challenge it asks a code for.
fn challenge_for(config: &Config, store: &SqliteStore, l: &Login<'_>, now: i64) -> Challenge {
    match start_login(config, store, l, optional(), now).unwrap() {
        Next::AskCode(challenge, _) => *challenge,
        other => panic!("expected a prompt, got {other:?}"),
    }
}

/// Ten sessions all shown the prompt before any answers: their answers get no more
/// checks than `max_failures`, and the right code answered last is refused too.
#[test]
fn sessions_held_at_the_prompt_get_no_more_checks_than_max_failures() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let l = login("alice", Some("203.0.113.9"));
    let held: Vec<Challenge> = (0..10)
        .map(|_| challenge_for(&config, &store, &l, NOW))
        .collect();
    let wrong = Answer::from("000000");
    let mut outcomes: Vec<Outcome> = held[..9]
        .iter()
        .map(|c| check_answer(&config, &store, &l, c, &wrong, NOW, NOW + 1).unwrap())
        .collect();
    outcomes.push(
        check_answer(
            &config,
            &store,
            &l,
            &held[9],
            &code_at_offset(0),
            NOW,
            NOW + 1,
        )
        .unwrap(),
    );
    let checked = outcomes
        .iter()
        .filter(|o| **o == Outcome::Denied(DenyReason::WrongCode))
        .count();
    assert_eq!(checked, 5, "{outcomes:?}");
    assert!(
        outcomes[5..]
            .iter()
            .all(|o| matches!(o, Outcome::Denied(DenyReason::Throttled { .. }))),
        "{outcomes:?}"
    );
}

/// The code is checked against the time the answer arrived, not the time of the prompt.
#[test]
fn an_answer_is_checked_at_the_time_it_arrived() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let l = login("alice", Some("192.0.2.5"));
    let held = challenge_for(&config, &store, &l, NOW);
    // The prompt's code, typed three steps later (window 1).
    assert_eq!(
        check_answer(
            &config,
            &store,
            &l,
            &held,
            &code_at_offset(0),
            NOW,
            NOW + 90
        )
        .unwrap(),
        Outcome::Denied(DenyReason::WrongCode)
    );
    let held = challenge_for(&config, &store, &l, NOW);
    assert_eq!(
        check_answer(
            &config,
            &store,
            &l,
            &held,
            &code_at_offset(3),
            NOW,
            NOW + 90
        )
        .unwrap(),
        Outcome::Success(Method::Code)
    );
}

/// An answer later than prompt_timeout is refused unchecked and counts nothing.
#[test]
fn an_answer_after_the_prompt_timeout_is_refused_unchecked() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let l = login("alice", Some("192.0.2.6"));
    let held = challenge_for(&config, &store, &l, NOW);
    let late = NOW + config.policy.prompt_timeout.secs() as i64 + 1;
    let step_late = (late - NOW) / 30;
    assert_eq!(
        check_answer(
            &config,
            &store,
            &l,
            &held,
            &code_at_offset(step_late),
            NOW,
            late
        )
        .unwrap(),
        Outcome::Denied(DenyReason::PromptTimedOut)
    );
    // An answer "before" the prompt (a clock stepped back) is refused the same way.
    assert_eq!(
        check_answer(&config, &store, &l, &held, &code_at_offset(0), NOW, NOW - 1).unwrap(),
        Outcome::Denied(DenyReason::PromptTimedOut)
    );
    let (pairs, window) = store.throttle_state("alice").unwrap();
    assert!(
        pairs.is_empty() && window.failures == 0,
        "{pairs:?} {window:?}"
    );
}

/// A factor replaced while the prompt was open: the old key's code is refused.
#[test]
fn a_factor_replaced_at_the_prompt_refuses_the_old_keys_code() {
    let config = Config::default();
    let store = enrolled_store(&[]);
    let l = login("alice", Some("192.0.2.7"));
    let held = challenge_for(&config, &store, &l, NOW);
    store.remove_factors("alice", None).unwrap();
    let other = SecretKey::from_bytes(b"abcdefghijabcdefghij".to_vec());
    store
        .enroll(
            "alice",
            &Enrollment {
                name: crate::store::DEFAULT_FACTOR,
                secret: &other,
                params: params(),
                mode: crate::store::EnrollMode::New,
                recovery_codes: None,
                confirmed_step: None,
            },
            NOW,
        )
        .unwrap();
    let outcome =
        check_answer(&config, &store, &l, &held, &code_at_offset(0), NOW, NOW + 1).unwrap();
    assert_eq!(outcome, Outcome::Denied(DenyReason::FactorChanged));
}

#[test]
fn a_refused_answer_says_why() {
    let said = |reason| match notice_after_answer(&Outcome::Denied(reason)) {
        Some(Notice::Error(text)) => text,
        other => panic!("{other:?}"),
    };
    assert_eq!(said(DenyReason::WrongCode), "Wrong verification code.");
    assert_eq!(
        said(DenyReason::Replayed),
        "This code was already used; wait for the next one."
    );
    assert!(said(DenyReason::Throttled { wait_secs: 42 }).contains("try again in 42 s"));
    assert_eq!(notice_after_answer(&Outcome::Success(Method::Code)), None);
    assert_eq!(
        notice_after_answer(&Outcome::Denied(DenyReason::EnrollmentNotConfirmed)),
        None
    );
}

/// Where the next login of alice from `l` goes, without answering anything.
fn next_for(config: &Config, store: &SqliteStore, l: &Login<'_>, now: i64) -> &'static str {
    match start_login(config, store, l, optional(), now).unwrap() {
        Next::AskCode(..) => "ask",
        Next::Remembered(_) => "remembered",
        Next::Done(Outcome::Denied(DenyReason::Throttled { .. }), _) => "throttled",
        other => panic!("unexpected {other:?}"),
    }
}

fn remembering() -> Config {
    let mut config = Config::default();
    config.policy.remember_source = Duration(8 * 3600);
    config
}

#[test]
fn a_remembered_source_is_not_asked_again_until_the_time_runs_out() {
    let config = remembering();
    let store = enrolled_store(&[]);
    let here = login("alice", Some("192.0.2.1"));
    assert_eq!(next_for(&config, &store, &here, NOW), "ask");
    assert_eq!(
        attempt(&config, &store, &here, &code_at_offset(0), NOW),
        Outcome::Success(Method::Code)
    );
    assert_eq!(next_for(&config, &store, &here, NOW + 60), "remembered");
    assert_eq!(
        next_for(&config, &store, &here, NOW + 8 * 3600 - 1),
        "remembered"
    );
    assert_eq!(next_for(&config, &store, &here, NOW + 8 * 3600), "ask");
    // Another address, the same address as a name, no address, su and sudo: asked.
    let there = login("alice", Some("192.0.2.2"));
    assert_eq!(next_for(&config, &store, &there, NOW + 60), "ask");
    let console = login("alice", None);
    assert_eq!(next_for(&config, &store, &console, NOW + 60), "ask");
    for service in NEVER_REMEMBERED_SERVICES {
        let switch = Login { service, ..here };
        assert_eq!(next_for(&config, &store, &switch, NOW + 60), "ask");
    }
    // Turned off, or shortened below what is left: asked.
    assert_eq!(next_for(&Config::default(), &store, &here, NOW + 60), "ask");
    let mut shorter = config.clone();
    shorter.policy.remember_source = Duration(3600);
    assert_eq!(next_for(&shorter, &store, &here, NOW + 60), "ask");
    assert_eq!(
        next_for(&shorter, &store, &here, NOW + 7 * 3600 + 1),
        "remembered"
    );
}

#[test]
fn only_literal_addresses_are_remembered() {
    let config = remembering();
    for (rhost, service) in [
        ("host.example.org", "sshd"),
        ("192.0.2.1", "sudo"),
        ("192.0.2.1", "su"),
        ("", "sshd"),
    ] {
        let store = enrolled_store(&[]);
        let l = Login {
            user: "alice",
            service,
            rhost: Some(rhost),
            tty: Some("pts/1"),
        };
        assert_eq!(
            attempt(&config, &store, &l, &code_at_offset(0), NOW),
            Outcome::Success(Method::Code)
        );
        assert_eq!(
            next_for(&config, &store, &l, NOW + 60),
            "ask",
            "{rhost} {service}"
        );
    }
    let l = login("alice", Some("2001:db8::1"));
    assert_eq!(l.rememberable_source(), Some("2001:db8::1"));
}

#[test]
fn a_recovery_code_remembers_the_source_too() {
    let config = remembering();
    let store = enrolled_store(&["abcd-efgh-ijkl"]);
    let here = login("alice", Some("192.0.2.1"));
    assert_eq!(
        attempt(&config, &store, &here, &Answer::from("abcd-efgh-ijkl"), NOW),
        Outcome::Success(Method::RecoveryCode)
    );
    assert_eq!(next_for(&config, &store, &here, NOW + 60), "remembered");
}

fn enroll_factor(store: &SqliteStore, name: &str) {
    let enrollment = Enrollment {
        name,
        secret: &key(),
        params: params(),
        mode: EnrollMode::New,
        recovery_codes: None,
        confirmed_step: None,
    };
    store.enroll("alice", &enrollment, NOW).unwrap();
}

#[test]
fn reset_unlock_and_a_new_factor_forget_remembered_sources() {
    let config = remembering();
    let here = login("alice", Some("192.0.2.1"));
    let remembered_store = || {
        let store = enrolled_store(&[]);
        attempt(&config, &store, &here, &code_at_offset(0), NOW);
        assert_eq!(next_for(&config, &store, &here, NOW + 60), "remembered");
        store
    };
    let store = remembered_store();
    store.unlock("alice").unwrap();
    assert_eq!(next_for(&config, &store, &here, NOW + 60), "ask");

    let store = remembered_store();
    enroll_factor(&store, "spare");
    assert_eq!(next_for(&config, &store, &here, NOW + 60), "ask");
    // Remembered again, then the spare removed (`disable --name`, `reset --name`).
    attempt(&config, &store, &here, &code_at_offset(1), NOW + 60);
    assert_eq!(next_for(&config, &store, &here, NOW + 61), "remembered");
    assert_eq!(store.remove_factors("alice", Some("spare")).unwrap(), 1);
    assert_eq!(next_for(&config, &store, &here, NOW + 61), "ask");

    let store = remembered_store();
    store.remove_factors("alice", None).unwrap();
    enroll_factor(&store, DEFAULT_FACTOR);
    let remembered: Option<i64> = store
        .login_state("alice", "192.0.2.1")
        .unwrap()
        .remembered_until;
    assert_eq!(remembered, None);
}

/// A remembered source skips the code, never the throttle: a user locked by the
/// per-user ceiling is refused from it as from anywhere.
#[test]
fn a_locked_user_is_refused_from_a_remembered_source() {
    let mut config = remembering();
    config.throttle.user_max_failures = 3;
    let store = enrolled_store(&[]);
    let here = login("alice", Some("192.0.2.1"));
    attempt(&config, &store, &here, &code_at_offset(0), NOW);
    for i in 0..3 {
        let rhost = format!("203.0.113.{i}");
        attempt(
            &config,
            &store,
            &login("alice", Some(&rhost)),
            &Answer::from("000000"),
            NOW + 1,
        );
    }
    assert_eq!(next_for(&config, &store, &here, NOW + 2), "throttled");
}
