#!/bin/sh
# Turns pam_totp on for SSH logins without taking away a way in that worked before:
#
#   /usr/share/pam-totp/enable-sshd.sh [--no-reload]
#
# (installed by the .deb; packaging/enable-sshd.sh in the source)
#
#
# - Reads sshd's effective configuration (sshd -T) before changing anything.
# - Writes /etc/ssh/sshd_config.d/50-pam-totp.conf: every first factor that worked
#   keeps working, now followed by the code. Keys: "publickey,keyboard-interactive"
#   (key + code). Passwords: "keyboard-interactive" (password + code). root under
#   PermitRootLogin prohibit-password: key + code (a Match block, since sshd refuses
#   keyboard-interactive for such a root otherwise; a password alone stays refused).
# - Runs pam-auth-update --enable totp (the code after the password in common-auth)
#   and puts "auth [success=done ignore=ignore default=die] pam_totp.so after_publickey"
#   before the password in /etc/pam.d/sshd, so a key is not followed by a password.
#   The old file is kept in /var/backups/pam_totp/.
# - Checks with sshd -t, then compares `totp-admin doctor`'s lockout findings before
#   and after: sshd is reloaded only when no account lost its way in. Otherwise the
#   accounts are named and sshd keeps running with its old configuration.
# - The reload goes through systemctl (the ssh or sshd unit that is running), or
#   /etc/init.d/ssh without systemd; when no sshd service runs, it says so plainly and
#   the configuration applies when sshd starts.
#
# It refuses, changing nothing, when the configuration is one it cannot extend
# safely: AuthenticationMethods already set, hostbased or GSSAPI logins on, or no
# sshd_config.d directory that sshd_config includes.
set -eu

reload=yes
for arg in "$@"; do
    case "$arg" in
    --no-reload) reload=no ;;
    -h | --help)
        sed -n '2,28p' "$0"
        exit 0
        ;;
    *)
        echo "enable-sshd.sh: unknown option $arg (see --help)" >&2
        exit 2
        ;;
    esac
done

say() { echo "enable-sshd: $*"; }
fail() {
    echo "enable-sshd: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root"
command -v sshd >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin"
command -v sshd >/dev/null 2>&1 || fail "sshd is not installed"
command -v totp-admin >/dev/null 2>&1 || fail "totp-admin is not installed (install the package first)"

ssh_dir=/etc/ssh
dropin=$ssh_dir/sshd_config.d/50-pam-totp.conf
pam_sshd=/etc/pam.d/sshd
backups=/var/backups/pam_totp
pam_line='auth [success=done ignore=ignore default=die] pam_totp.so after_publickey'

[ -d "$ssh_dir/sshd_config.d" ] &&
    grep -Eqi '^[[:space:]]*Include[[:space:]]+(/etc/ssh/)?sshd_config\.d/\*\.conf' "$ssh_dir/sshd_config" ||
    fail "$ssh_dir/sshd_config does not include sshd_config.d/*.conf: add the lines of 50-pam-totp.conf to it yourself (docs/ROLLOUT.md)"
[ -f "$pam_sshd" ] || fail "$pam_sshd is missing"

# sshd -T and -t want their privilege separation directory, which the ssh service
# creates when it starts.
[ -d /run/sshd ] || install -d -m 0755 /run/sshd

# Lockout findings of doctor, one account per line ("NAME: why").
lockouts() {
    totp-admin doctor 2>/dev/null | sed -n 's/^FAIL  lockout  *//p' | sort
}

# The configuration as it is now, without an earlier version of our drop-in.
install -d -m 0700 "$backups"
stamp=$(date +%Y%m%d%H%M%S)
previous=""
if [ -f "$dropin" ]; then
    previous=$backups/50-pam-totp.conf.$stamp
    mv "$dropin" "$previous"
fi
restore() {
    rm -f "$dropin"
    [ -z "$previous" ] || mv "$previous" "$dropin"
    if [ -n "${pam_backup:-}" ] && [ -f "$pam_backup" ]; then
        cp -p "$pam_backup" "$pam_sshd"
    fi
    if [ "${enabled_profile:-no}" = yes ]; then
        DEBIAN_FRONTEND=noninteractive pam-auth-update --disable totp || true
    fi
}
trap 'restore; echo "enable-sshd: stopped; nothing was changed" >&2' EXIT

before_lockouts=$(lockouts)

effective() {
    # $1: keyword (lower case); $2: optional -C connection spec
    if [ -n "${2:-}" ]; then
        sshd -T -C "$2" 2>/dev/null | awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }'
    else
        sshd -T 2>/dev/null | awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }'
    fi
}
sshd -T >/dev/null 2>&1 || fail "sshd -T fails: fix sshd's configuration first ($(sshd -T 2>&1 | head -n 1))"

methods=$(effective authenticationmethods)
pubkey=$(effective pubkeyauthentication)
password=$(effective passwordauthentication)
kbdint=$(effective kbdinteractiveauthentication)
usepam=$(effective usepam)
hostbased=$(effective hostbasedauthentication)
gssapi=$(effective gssapiauthentication)
root_login=$(effective permitrootlogin "user=root,host=localhost,addr=192.0.2.1")

[ "$methods" = any ] ||
    fail "AuthenticationMethods is already \"$methods\": add keyboard-interactive to each of its lists yourself (docs/ROLLOUT.md)"
[ "$hostbased" != yes ] ||
    fail "HostbasedAuthentication is on: those logins cannot be followed by a code; turn it off or configure AuthenticationMethods yourself"
[ "${gssapi:-no}" != yes ] ||
    fail "GSSAPIAuthentication is on: those logins cannot be followed by a code; turn it off or configure AuthenticationMethods yourself"

lists=""
kept=""
if [ "$pubkey" = yes ]; then
    lists="publickey,keyboard-interactive"
    kept="keys (now key + code)"
fi
if [ "$password" = yes ] || { [ "$kbdint" = yes ] && [ "$usepam" = yes ]; }; then
    lists="${lists:+$lists }keyboard-interactive"
    kept="${kept:+$kept, }passwords (now password + code)"
fi
[ -n "$lists" ] || fail "sshd allows neither keys nor passwords: nothing to add a code to"

root_block=""
case "$root_login" in
prohibit-password | without-password)
    if [ "$pubkey" = yes ]; then
        root_block="
# root, under PermitRootLogin prohibit-password: a key, then the code. sshd refuses
# keyboard-interactive for root unless PermitRootLogin is yes; this list keeps the key
# required, so a password alone still never lets root in.
Match User root
    PermitRootLogin yes
    AuthenticationMethods publickey,keyboard-interactive"
        kept="$kept, root with a key (now key + code)"
    fi
    ;;
forced-commands-only)
    root_block="
# root, under PermitRootLogin forced-commands-only: keys with a forced command, as
# before, without a code (sshd refuses keyboard-interactive for such a root).
Match User root
    AuthenticationMethods publickey"
    kept="$kept, root's forced-command keys (no code)"
    ;;
esac

cat >"$dropin" <<EOF
# /etc/ssh/sshd_config.d/50-pam-totp.conf, written by pam_totp's enable-sshd.sh.
# Every way in that worked before keeps working, followed by the code:
# $kept.
# sshd keeps the first value it reads for a keyword, and sshd_config includes this
# directory first. The PAM side: pam_totp.so after_publickey in /etc/pam.d/sshd.
UsePAM yes
KbdInteractiveAuthentication yes
# sshd's "password" method answers every PAM prompt with the password, so it cannot
# carry a code: passwords go through keyboard-interactive (or see forward_pass).
PasswordAuthentication no
AuthenticationMethods $lists
$root_block
EOF
chmod 0644 "$dropin"

# PAM: the code after the password for every service that includes common-auth,
# and, before the password in sshd's stack, the line that ends the stack after a key.
if ! grep -q 'pam_totp\.so' /etc/pam.d/common-auth 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive pam-auth-update --enable totp
    enabled_profile=yes
fi
if ! grep -Eq '^[^#]*pam_totp\.so.*after_publickey' "$pam_sshd"; then
    pam_backup=$backups/pam.d-sshd.$stamp
    cp -p "$pam_sshd" "$pam_backup"
    tmp=$pam_sshd.pam-totp-new
    awk -v line="$pam_line" '
        !done && /^[[:space:]]*(@include[[:space:]]+common-auth|auth[[:space:]]+(substack|include)[[:space:]]+(password-auth|system-auth))/ {
            print "# pam_totp: after a public key, the code alone (the password below is skipped)."
            print line
            done = 1
        }
        { print }
        END { if (!done) exit 3 }
    ' "$pam_sshd" >"$tmp" || {
        rm -f "$tmp"
        fail "no \"@include common-auth\" in $pam_sshd: put \"$pam_line\" before the password module yourself"
    }
    chmod --reference="$pam_sshd" "$tmp"
    mv "$tmp" "$pam_sshd"
fi

sshd -t || fail "sshd -t refuses the new configuration"
trap - EXIT
[ -z "$previous" ] || rm -f "$previous"

after_lockouts=$(lockouts)
# Accounts named now and not before (the reasons change with the configuration).
before_names=$(printf '%s\n' "$before_lockouts" | sed -n 's/: .*//p')
new_lockouts=$(printf '%s\n' "$after_lockouts" | while IFS= read -r line; do
    [ -n "$line" ] || continue
    printf '%s\n' "$before_names" | grep -qxF -e "${line%%: *}" || printf '%s\n' "$line"
done)
if [ -n "$before_lockouts" ]; then
    say "accounts that could not log in over SSH before either:"
    printf '%s\n' "$before_lockouts" | sed 's/^/  /'
fi
if [ -n "$new_lockouts" ]; then
    say "sshd was NOT reloaded: these accounts would be locked out:"
    printf '%s\n' "$new_lockouts" | sed 's/^/  /'
    say "give them an authorized key or a password (totp-admin doctor says more), then run this again"
    exit 1
fi
say "kept: $kept"

# Reloads the running sshd through its service manager. 0: reloaded; 1: the reload
# failed; 2: no running sshd service was found (nothing to reload).
reload_sshd() {
    if [ -d /run/systemd/system ]; then
        for unit in ssh.service sshd.service; do
            if systemctl is-active --quiet "$unit"; then
                systemctl reload "$unit" && return 0
                return 1
            fi
        done
        return 2
    fi
    if [ -x /etc/init.d/ssh ] && /etc/init.d/ssh status >/dev/null 2>&1; then
        /etc/init.d/ssh reload >/dev/null && return 0
        return 1
    fi
    return 2
}
if [ "$reload" = no ]; then
    say "no account is locked out; sshd was NOT reloaded (--no-reload): apply with systemctl reload ssh"
    exit 0
fi
status=0
reload_sshd || status=$?
case $status in
0) say "no account is locked out; sshd reloaded: new SSH logins ask for the code" ;;
2) say "no account is locked out; sshd was NOT reloaded: no running ssh service found. sshd reads the new configuration when it starts" ;;
*)
    say "sshd was NOT reloaded: the reload failed (see above); the configuration is in place, apply it with systemctl reload ssh"
    exit 1
    ;;
esac
