# pam_totp %postun ($1: 0 on erase, 1 on upgrade). Only a real erase removes the store
# (enrolled factors, recovery codes, throttle state) and the SELinux policy module; an
# upgrade keeps them, and so does an erase in favour of the other flavour
# (pam_totp <-> pam_totp-postgresql), whose module is then in place.
if [ "$1" = 0 ] && [ ! -e /usr/lib64/security/pam_totp.so ]; then
    rm -rf /var/lib/pam_totp
    # Left behind only when empty; a changed config stays as config.toml.rpmsave.
    rmdir /etc/pam_totp 2>/dev/null || :
    if command -v selinuxenabled >/dev/null 2>&1 && selinuxenabled &&
        command -v semodule >/dev/null 2>&1; then
        semodule -X 200 -r pam_totp >/dev/null 2>&1 || :
    fi
fi
exit 0
