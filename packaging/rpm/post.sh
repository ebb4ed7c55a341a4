# pam_totp %post: the state directory and the store ($1: 1 on install, 2 on upgrade).
# The module is not added to any PAM stack: see /usr/share/doc/pam_totp/PACKAGING.md.
install -d -o root -g root -m 0700 /var/lib/pam_totp
# Creates the store at the configured path when missing, migrates an existing one
# forward; enrolled users are kept.
/usr/bin/totp-admin store init
