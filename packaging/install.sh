#!/bin/sh
# Builds the pam_totp packages from this checkout and installs the .deb, so that a
# first install is the same as an administrator's:
#
#   packaging/install.sh                # module, totp-admin, config, store (2FA not yet on)
#   packaging/install.sh --enable-sshd  # ... and turn it on for SSH logins
#
# It installs the build dependencies (and Rust through rustup when cargo is missing).
# --enable-sshd runs packaging/enable-sshd.sh: `pam-auth-update --enable totp` (the
# module then runs for every service that includes common-auth, optional for everyone
# until the config says otherwise), key + code and password + code for sshd (every
# way in that worked before keeps working, followed by the code), and a reload of
# sshd only when `totp-admin doctor` finds no account that would be locked out.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

enable_sshd=no
for arg in "$@"; do
    case "$arg" in
    --enable-sshd) enable_sshd=yes ;;
    -h | --help)
        sed -n '2,13p' "$0"
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
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends build-essential pkg-config libpam0g-dev \
    ca-certificates curl

# Rust: the distribution's compiler is too old for the dependencies; rustup installs a
# current stable one for root when none is there.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain stable
    PATH="$HOME/.cargo/bin:$PATH"
fi

bash packaging/build.sh

target=${CARGO_TARGET_DIR:-$root/target}
deb=$(ls "$target"/packages/pam-totp_*.deb | head -n 1)
apt-get install -y --no-install-recommends "$deb"

if [ "$enable_sshd" = yes ]; then
    # Keys and passwords keep working, each followed by the code; sshd is reloaded
    # only when no account would be locked out (see packaging/enable-sshd.sh).
    sh packaging/enable-sshd.sh
    echo "pam_totp is on for SSH: users enroll with 'totp-admin enroll'."
else
    echo "pam_totp is installed but not yet in any PAM stack:"
    echo "  pam-auth-update --enable totp     (or see README.md for /etc/pam.d/sshd lines)"
fi
totp-admin doctor || true
