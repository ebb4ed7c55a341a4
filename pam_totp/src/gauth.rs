//! The `~/.google_authenticator` file format (libpam-google-authenticator's FILEFORMAT):
//! the base32 key on the first line; option lines `" NAME args`; eight-digit scratch
//! codes, one a line. Parsed here, apart from `totp-admin import google-authenticator`
//! which reads the file, so that the parser can be tested and fuzzed on its own.
//! HOTP files (`" HOTP_COUNTER`) are refused: this module is time-based only.

use crate::otp::decode_base32;
use crate::secret::SecretKey;
use zeroize::Zeroizing;

/// What a google-authenticator file holds that can be imported.
pub struct GoogleAuthenticatorFile {
    pub secret: SecretKey,
    pub period: u64,
    /// Time steps already used (`DISALLOW_REUSE`): they stay used after the import.
    pub used_steps: Vec<u64>,
    /// Unused scratch codes: imported as recovery codes.
    pub scratch_codes: Vec<Zeroizing<String>>,
    /// Options the file sets that apply host-wide here, for the admin to know.
    pub notes: Vec<String>,
}

/// Parses the file's text. Errors name the line, never its content (the key).
pub fn parse_google_authenticator(
    text: &str,
) -> std::result::Result<GoogleAuthenticatorFile, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let (_, first) = lines.next().ok_or("the file is empty")?;
    let secret =
        decode_base32(first.trim()).map_err(|e| format!("line 1 is not a usable key: {e}"))?;
    let mut file = GoogleAuthenticatorFile {
        secret,
        period: 30,
        used_steps: Vec::new(),
        scratch_codes: Vec::new(),
        notes: Vec::new(),
    };
    let mut totp = false;
    for (n, line) in lines {
        if let Some(option) = line.strip_prefix("\" ") {
            let mut words = option.split_ascii_whitespace();
            let name = words.next().unwrap_or("");
            let args: Vec<&str> = words.collect();
            match name {
                "TOTP_AUTH" => totp = true,
                "HOTP_COUNTER" => {
                    return Err(
                        "counter-based (HOTP) codes cannot be imported: this module is \
                                time-based only; have the user enroll anew with totp-admin enroll"
                            .into(),
                    )
                }
                "STEP_SIZE" => {
                    let period = single_number(&args).filter(|p| (1..=3600).contains(p));
                    file.period =
                        period.ok_or(format!("line {n}: STEP_SIZE needs 1 to 3600 seconds"))?;
                }
                "DISALLOW_REUSE" => {
                    for word in &args {
                        let step = word
                            .parse::<u64>()
                            .map_err(|_| format!("line {n}: DISALLOW_REUSE needs numbers"))?;
                        file.used_steps.push(step);
                    }
                }
                "WINDOW_SIZE" => {
                    let size = single_number(&args)
                        .ok_or(format!("line {n}: WINDOW_SIZE needs a number"))?;
                    file.notes.push(format!(
                        "WINDOW_SIZE {size} is not imported: [totp] window in the configuration applies to everyone"
                    ));
                }
                "RATE_LIMIT" => file.notes.push(
                    "RATE_LIMIT is not imported: [throttle] in the configuration applies".into(),
                ),
                _ => {
                    let shown: String = name
                        .chars()
                        .filter(|c| c.is_ascii_graphic())
                        .take(32)
                        .collect();
                    return Err(format!("line {n}: unknown option {shown}"));
                }
            }
        } else if line.len() == 8 && line.bytes().all(|b| b.is_ascii_digit()) {
            file.scratch_codes.push(Zeroizing::new(line.to_string()));
        } else if line.trim().is_empty() {
            continue;
        } else {
            return Err(format!(
                "line {n} is neither an option nor an eight-digit scratch code"
            ));
        }
    }
    if !totp {
        return Err("not a time-based (TOTP) file: the \" TOTP_AUTH line is missing".into());
    }
    Ok(file)
}

fn single_number(args: &[&str]) -> Option<u64> {
    match args {
        [one] => one.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::encode_base32;

    /// Made by `google-authenticator -t -d -f -r 3 -R 30 -w 3 -e 5 -Q NONE -q -s FILE`
    /// (libpam-google-authenticator 20191231).
    const TOTP_FILE: &str = "JERALC6HSFOCDZIWSGL5HO3HV4\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\
                             \" DISALLOW_REUSE\n\" TOTP_AUTH\n86257872\n16176417\n96614761\n15324413\n10343827\n";
    /// `-t -d -f -S 60 ...`, after two logins (the module adds the used time steps).
    const STEP_FILE: &str = "GBN4NGLUSCRIT2LZRDFIV4OO2Y\n\" RATE_LIMIT 3 30 1700000000\n\" WINDOW_SIZE 17\n\
                             \" STEP_SIZE 60\n\" DISALLOW_REUSE 28333333 28333334\n\" TOTP_AUTH\n55763605\n";
    /// `-c ...`: counter-based.
    const HOTP_FILE: &str = "FVYV274567RJLJB35IXLELU4OQ\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\
                             \" HOTP_COUNTER 1\n63512588\n18759281\n";

    #[test]
    fn a_totp_file() {
        let f = parse_google_authenticator(TOTP_FILE).unwrap();
        assert_eq!(
            encode_base32(&f.secret).as_str(),
            "JERALC6HSFOCDZIWSGL5HO3HV4"
        );
        assert_eq!(f.period, 30);
        assert!(f.used_steps.is_empty());
        let codes: Vec<&str> = f.scratch_codes.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            codes,
            ["86257872", "16176417", "96614761", "15324413", "10343827"]
        );
        assert_eq!(f.notes.len(), 2);
    }

    #[test]
    fn step_size_and_used_steps() {
        let f = parse_google_authenticator(STEP_FILE).unwrap();
        assert_eq!(f.period, 60);
        assert_eq!(f.used_steps, vec![28_333_333, 28_333_334]);
        assert_eq!(f.scratch_codes.len(), 1);
        assert!(f.notes.iter().any(|n| n.contains("WINDOW_SIZE 17")));
    }

    #[test]
    fn hotp_is_refused() {
        let err = parse_google_authenticator(HOTP_FILE).err().unwrap();
        assert!(err.contains("HOTP"), "{err}");
    }

    #[test]
    fn malformed_files_are_refused_without_echoing_the_key() {
        for (text, want) in [
            ("", "empty"),
            ("NOT*BASE32\n\" TOTP_AUTH\n", "line 1"),
            ("JBSWY3DP\n\" TOTP_AUTH\n", "line 1"),
            ("JERALC6HSFOCDZIWSGL5HO3HV4\n12345678\n", "TOTP_AUTH"),
            (
                "JERALC6HSFOCDZIWSGL5HO3HV4\n\" TOTP_AUTH\n1234567\n",
                "line 3",
            ),
            (
                "JERALC6HSFOCDZIWSGL5HO3HV4\n\" TOTP_AUTH\n\" STEP_SIZE 0\n",
                "STEP_SIZE",
            ),
            (
                "JERALC6HSFOCDZIWSGL5HO3HV4\n\" TOTP_AUTH\n\" DISALLOW_REUSE x\n",
                "DISALLOW_REUSE",
            ),
            (
                "JERALC6HSFOCDZIWSGL5HO3HV4\n\" TOTP_AUTH\n\" NEW_THING 1\n",
                "unknown option NEW_THING",
            ),
            (
                "JERALC6HSFOCDZIWSGL5HO3HV4\n\" TOTP_AUTH\nJERALC6HSFOCDZIWSGL5HO3HV4\n",
                "line 3",
            ),
        ] {
            let err = parse_google_authenticator(text)
                .err()
                .unwrap_or_else(|| panic!("{text:?} accepted"));
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains("JERALC6H"), "{err}");
        }
    }

    #[test]
    fn crlf_and_blank_lines() {
        let text = TOTP_FILE.replace('\n', "\r\n") + "\r\n";
        assert_eq!(
            parse_google_authenticator(&text)
                .unwrap()
                .scratch_codes
                .len(),
            5
        );
    }
}
