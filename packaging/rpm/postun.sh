# pam_totp %postun ($1: 0 on erase, 1 on upgrade). Only a real erase removes the store
# (enrolled factors, recovery codes, throttle state); an upgrade keeps it.
if [ "$1" = 0 ]; then
    rm -rf /var/lib/pam_totp
    # Left behind only when empty; a changed config stays as config.toml.rpmsave.
    rmdir /etc/pam_totp 2>/dev/null || :
fi
exit 0
