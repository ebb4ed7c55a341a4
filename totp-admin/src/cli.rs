//! The command line. Parsing opens no file: the caller checks (`caller`) run on the
//! parsed arguments before anything is read.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Two-factor authentication (TOTP) for logins through pam_totp.
///
/// Users enroll themselves with `totp-admin enroll`; root resets, unlocks and lists
/// users and sets the policy. A user may act only on their own account.
#[derive(Debug, Parser)]
#[command(name = "totp-admin", version, max_term_width = 100)]
pub struct Cli {
    /// Read this configuration instead of /etc/pam_totp/config.toml (root only)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print JSON instead of a table (read commands)
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up a new second factor: QR code, key, confirmation code, recovery codes
    Enroll(EnrollArgs),
    /// Show whether a user is enrolled, their policy and lockout
    Status(UserArg),
    /// Remove your own second factors, or one of them (asks for a current code or a
    /// recovery code)
    Disable(DisableArgs),
    /// Remove a user's factors (or one of them), recovery codes and lockouts (root)
    Reset(ResetArgs),
    /// Clear a user's failed-attempt lockouts (root)
    Unlock(RequiredUser),
    /// List enrolled users (root)
    List,
    /// Make a new set of recovery codes; the old set stops working
    RecoveryCodes(UserArg),
    /// Show or change who must use a second factor
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Import a factor made by another tool (root)
    #[command(subcommand)]
    Import(ImportCommand),
    /// Check the configuration, the store, the PAM stacks, sshd and the clock (root)
    Doctor,
    /// Manage the store (root)
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Args)]
pub struct UserArg {
    /// The user (default: yourself; other users: root only)
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct RequiredUser {
    /// The user
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: String,
}

/// How the QR code is drawn by `enroll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QrChoice {
    /// Black on white, forced with terminal colours: scans on any theme
    Color,
    /// No colours; light modules drawn as blocks (for dark backgrounds)
    DarkTerminal,
    /// No colours; dark modules drawn as blocks (for light backgrounds)
    LightTerminal,
    /// No QR code; type the key or use the URI
    None,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The user (default: yourself; other users: root only)
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: Option<String>,

    /// The factor's name: add another one (phone, yubikey, spare) beside the first,
    /// which is named "default"
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Activate a known base32 key read from standard input, without confirmation (root)
    #[arg(long)]
    pub secret_stdin: bool,

    /// Replace the factor already enrolled (a user confirms it with a current code first)
    #[arg(long)]
    pub replace: bool,

    /// How to draw the QR code
    #[arg(long, value_enum, value_name = "STYLE", default_value = "color")]
    pub qr: QrChoice,
}

#[derive(Debug, Args)]
pub struct DisableArgs {
    /// Remove only this factor (default: every factor and the recovery codes)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The user
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: String,

    /// Remove only this factor (default: every factor, the recovery codes and lockouts)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Also end the user's running sessions (lost or stolen phone)
    #[arg(long)]
    pub logout: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the policy, or for one user why it applies
    Show(UserArg),
    /// Make the second factor mandatory or optional, host-wide or for a group (root)
    Set(PolicySetArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("level").required(true).args(["mandatory", "optional"])))]
pub struct PolicySetArgs {
    /// Require a second factor
    #[arg(long)]
    pub mandatory: bool,

    /// Do not require it (users who enrolled are still asked)
    #[arg(long)]
    pub optional: bool,

    /// Apply to the members of this group instead of the whole host
    #[arg(long, short = 'g', value_name = "GROUP")]
    pub group: Option<String>,

    /// Go ahead even when accounts that can log in today would be refused from now on
    /// (not enrolled, not exempt, no grace period)
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import a ~/.google_authenticator file: key, options and unused scratch codes
    GoogleAuthenticator(ImportGoogleArgs),
}

#[derive(Debug, Args)]
pub struct ImportGoogleArgs {
    /// The user the factor belongs to
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: String,

    /// The file (default: ~USER/.google_authenticator)
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Replace the factor the user already has
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create the store (and the host key), or migrate it to this version's schema
    Init(StoreInitArgs),
    /// Make a new host key and re-seal every factor's key under it
    Rekey,
    /// Copy every enrollment (factor, recovery codes, last used step) to the store of
    /// another configuration: SQLite to PostgreSQL to join a fleet, or back
    Copy(StoreCopyArgs),
}

#[derive(Debug, Args)]
pub struct StoreInitArgs {
    /// PostgreSQL: grant this database role what the module needs at login, and nothing more
    #[arg(long, value_name = "ROLE")]
    pub login_role: Option<String>,
}

#[derive(Debug, Args)]
pub struct StoreCopyArgs {
    /// The configuration whose store receives the copy
    #[arg(long, value_name = "CONFIG")]
    pub to: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let a = Cli::try_parse_from(["totp-admin", "status", "--user", "alice", "--json"]).unwrap();
        assert!(a.json);
        let b = Cli::try_parse_from([
            "totp-admin",
            "--config",
            "/x",
            "enroll",
            "--user",
            "a",
            "--secret-stdin",
        ])
        .unwrap();
        assert_eq!(b.config.as_deref(), Some(std::path::Path::new("/x")));
    }

    #[test]
    fn factor_names_and_yes() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["totp-admin"], args].concat());
        let Command::Enroll(e) = parse(&["enroll", "--name", "yubikey"]).unwrap().command else {
            panic!("enroll")
        };
        assert_eq!(e.name.as_deref(), Some("yubikey"));
        let Command::Disable(d) = parse(&["disable", "--name", "phone"]).unwrap().command else {
            panic!("disable")
        };
        assert_eq!(d.name.as_deref(), Some("phone"));
        let Command::Reset(r) = parse(&["reset", "-u", "alice", "--name", "x"])
            .unwrap()
            .command
        else {
            panic!("reset")
        };
        assert_eq!((r.user.as_str(), r.name.as_deref()), ("alice", Some("x")));
        let Command::Policy(PolicyCommand::Set(p)) =
            parse(&["policy", "set", "--mandatory", "--yes"])
                .unwrap()
                .command
        else {
            panic!("policy set")
        };
        assert!(p.yes && p.mandatory);
        assert!(parse(&["disable"]).is_ok());
    }

    #[test]
    fn policy_set_needs_a_level() {
        assert!(Cli::try_parse_from(["totp-admin", "policy", "set"]).is_err());
        assert!(
            Cli::try_parse_from(["totp-admin", "policy", "set", "--mandatory", "--optional"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["totp-admin", "policy", "set", "--optional", "--group", "g"])
                .is_ok()
        );
    }
}
