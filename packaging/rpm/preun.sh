# pam_totp %preun ($1: 0 on erase, 1 on upgrade). Lines naming pam_totp.so in a PAM
# service would refuse every login through it once the module is gone.
if [ "$1" = 0 ]; then
    for f in /etc/pam.d/*; do
        [ "$f" = /etc/pam.d/totp-admin ] && continue
        if grep -qs '^[^#]*pam_totp\.so' "$f"; then
            echo "pam_totp: WARNING: $f still uses pam_totp.so; remove that line now," \
                "or logins through it will fail" >&2
        fi
    done
fi
exit 0
