//! Every fuzz target on stable Rust: the checked-in corpus, then a deterministic stream
//! of mutations of it (`PAM_TOTP_FUZZ_ITERATIONS` per target, 3,000 unless set;
//! `PAM_TOTP_FUZZ_SEED` changes the stream). A crash found by libFuzzer belongs in the
//! corpus afterwards, so that this test keeps it fixed.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("config_parse", pam_totp_fuzz::config_parse),
    ("answer_check", pam_totp_fuzz::answer_check),
    ("gauth_import", pam_totp_fuzz::gauth_import),
    ("otpauth_base32", pam_totp_fuzz::otpauth_base32),
];

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a small, fixed generator, so a failure is reproduced by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes the parsers treat specially, to be inserted more often than chance would.
const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b"-",
    b"=",
    b"%",
    b"\"",
    b"\\",
    b"[",
    b"]",
    b"/",
    b":",
    b"?",
    b"&",
    b"#",
    b"\xff",
    b"\xc3\xa9",
    b"0",
    b"9",
    b"A",
    b"z",
    b"7",
    b"8",
    b"\" TOTP_AUTH\n",
    b"\" STEP_SIZE ",
    b"\" DISALLOW_REUSE ",
    b"[policy]\n",
    b"[totp]\n",
    b"digits = ",
    b"period = ",
    b"window = ",
    b"\"99999999999999999999d\"",
    b"exempt_networks = [\"::ffff:0.0.0.0/96\"]\n",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(8) {
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(16)).min(data.len());
                data.drain(start..end);
            }
            3 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                let at = rng.below(data.len() + 1);
                data.splice(at..at, piece.iter().copied());
            }
            4 => {
                // Splice in part of another seed.
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(64)).min(other.len());
                    let at = rng.below(data.len() + 1);
                    data.splice(at..at, other[start..end].iter().copied());
                }
            }
            _ => {
                let at = rng.below(data.len() + 1);
                let byte = rng.next() as u8;
                data.insert(at, byte);
            }
        }
    }
    data.truncate(4096);
    data
}

fn run_target(name: &str, target: Target) {
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "corpus/{name} is empty");
    for (path, bytes) in &seeds {
        let result = std::panic::catch_unwind(|| target(bytes));
        assert!(result.is_ok(), "{name}: {} fails", path.display());
    }
    let inputs: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
    let iterations = env_number("PAM_TOTP_FUZZ_ITERATIONS", 3000);
    let seed = env_number("PAM_TOTP_FUZZ_SEED", 0x5eed_f072);
    let mut rng = Rng(seed | 1);
    for i in 0..iterations {
        let data = mutate(&mut rng, &inputs);
        let result = std::panic::catch_unwind(|| target(&data));
        assert!(
            result.is_ok(),
            "{name}: mutation {i} (PAM_TOTP_FUZZ_SEED={seed}) fails on {data:?}"
        );
    }
}

#[test]
fn config_parse() {
    run_target(TARGETS[0].0, TARGETS[0].1);
}

#[test]
fn answer_check() {
    run_target(TARGETS[1].0, TARGETS[1].1);
}

#[test]
fn gauth_import() {
    run_target(TARGETS[2].0, TARGETS[2].1);
}

#[test]
fn otpauth_base32() {
    run_target(TARGETS[3].0, TARGETS[3].1);
}
