#!/bin/sh
# Builds the pam_totp .deb from this checkout and installs it, so that a first install is
# the same as an administrator's (Debian 12, Ubuntu 22.04 and later; as root):
#
#   packaging/install.sh                # module, totp-admin, config, store (2FA not yet on)
#   packaging/install.sh --enable-sshd  # ... and turn it on for SSH logins
#
#   --postgresql   install the PostgreSQL flavour, pam-totp-postgresql (docs/FLEET.md)
#   --rpm          also build the .rpm of that flavour, for RHEL-family hosts (not
#                  installed here; cargo-generate-rpm is installed first, 3 to 4 minutes)
#
# It says which step it is in: the build dependencies (apt-get, skipped when they are
# there), Rust (through rustup when cargo is missing), the .deb (packaging/build.sh,
# about 2 minutes on 2 cores), the package (apt-get install), and with --enable-sshd
# the package's /usr/share/pam-totp/enable-sshd.sh: `pam-auth-update --enable totp`, key + code and password +
# code for sshd (every way in that worked before keeps working, followed by the code),
# and a reload of sshd only when `totp-admin doctor` finds no account that would be
# locked out. It ends with what to do next.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

enable_sshd=no
flavour=sqlite
rpm=no
for arg in "$@"; do
    case "$arg" in
    --enable-sshd) enable_sshd=yes ;;
    --postgresql) flavour=postgresql ;;
    --rpm) rpm=yes ;;
    -h | --help)
        sed -n '2,19p' "$0"
        exit 0
        ;;
    *)
        echo "install.sh: unknown option $arg (see --help)" >&2
        exit 2
        ;;
    esac
done

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    echo "install.sh: this installs the .deb, on Debian and Ubuntu. On RHEL-family hosts:" >&2
    echo "  packaging/build.sh --rpm --sqlite, then dnf install target/packages/pam_totp-*.rpm" >&2
    echo "  (docs/PACKAGING.md)" >&2
    exit 1
fi

steps=4
[ "$enable_sshd" = no ] || steps=5
step=0
say_step() {
    step=$((step + 1))
    echo
    echo "[$step/$steps] $*"
}

needed="build-essential pkg-config libpam0g-dev ca-certificates curl"
# The .rpm carries an SELinux policy module, compiled with the policy's development files.
[ "$rpm" = no ] || needed="$needed selinux-policy-dev"
say_step "build dependencies: $needed"
missing=""
for package in $needed; do
    dpkg-query -W -f '${Status}\n' "$package" 2>/dev/null | grep -q ' installed$' ||
        missing="$missing $package"
done
if [ -z "$missing" ]; then
    echo "already installed"
else
    echo "installing$missing (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -q --no-install-recommends $missing
fi

say_step "Rust"
# shellcheck source=packaging/rust-env.sh
. "$root/packaging/rust-env.sh"
if [ "$rust_installed" = yes ]; then
    echo "installed with rustup: $(cargo --version)"
else
    echo "using $(cargo --version) ($(command -v cargo))"
fi

kinds="--deb"
what=".deb"
if [ "$rpm" = yes ]; then
    kinds="--deb --rpm"
    what=".deb and the .rpm"
fi
case "$flavour" in
sqlite) package=pam-totp ;;
*) package=pam-totp-postgresql ;;
esac
cargo_deb=""
cargo deb --version >/dev/null 2>&1 || cargo_deb="; cargo-deb is installed first, about 1 minute"
say_step "building the $what of $package (cargo build --release, about 2 minutes on 2 cores$cargo_deb)"
# shellcheck disable=SC2086 # one word per option
sh packaging/build.sh $kinds "--$flavour"

target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in
/*) ;;
*) target=$root/$target ;;
esac
deb=$(ls "$target"/packages/"${package}"_*.deb)
say_step "installing $deb (apt-get)"
# --reinstall: a rebuild of the version already installed is installed too.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall "$deb"

done_line="pam_totp is installed: $(/usr/bin/totp-admin --version), the module in"
done_line="$done_line /usr/lib/x86_64-linux-gnu/security/, the config /etc/pam_totp/config.toml,"
done_line="$done_line the store /var/lib/pam_totp/totp.db."
if [ "$enable_sshd" = no ]; then
    echo
    echo "$done_line"
    echo "No PAM stack uses it yet: every login works as before."
    echo
    echo "Next:"
    echo "  /usr/share/pam-totp/enable-sshd.sh"
    echo "                                   turn the code on for SSH: keys and passwords keep"
    echo "                                   working, each followed by the code (README.md)"
    echo "  pam-auth-update --enable totp    or: the code after the password for every service"
    echo "                                   that includes common-auth (console, su, sudo)"
    echo "  totp-admin enroll                each user, as themselves: QR code, confirm, recovery codes"
    echo "  totp-admin doctor                check the config, store, PAM stacks, sshd and clock"
    exit 0
fi

say_step "turning the code on for SSH logins (/usr/share/pam-totp/enable-sshd.sh)"
if ! sh /usr/share/pam-totp/enable-sshd.sh; then
    echo
    echo "$done_line"
    echo "The code is NOT on for SSH: enable-sshd.sh said why above. Fix what it names, then"
    echo "run /usr/share/pam-totp/enable-sshd.sh again (totp-admin doctor says more)."
    exit 1
fi
echo
echo "$done_line"
echo "SSH logins ask for the code of every user who has enrolled; everyone else logs in as"
echo "before (the policy is optional)."
echo
echo "Next:"
echo "  keep this session open, and check from a second terminal that you still get in over SSH"
echo "  totp-admin enroll                each user, as themselves: QR code, confirm, recovery codes"
echo "  totp-admin policy set --mandatory --group GROUP"
echo "                                   then require it, group by group (docs/ROLLOUT.md)"
echo "  totp-admin doctor                check the config, store, PAM stacks, sshd and clock"
