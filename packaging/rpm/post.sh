# pam_totp %post: the state directory and the store ($1: 1 on install, 2 on upgrade).
# The module is not added to any PAM stack: see /usr/share/doc/pam_totp/PACKAGING.md.
install -d -o root -g root -m 0700 /var/lib/pam_totp
# Where SELinux is enabled, the policy module that lets the login programs read the
# config and key and write the store, and totp-admin run in its own domain (priority
# 200, that of packaged modules). Where it is disabled or absent, nothing is done:
# run this semodule command by hand after enabling SELinux.
selinux=no
if command -v selinuxenabled >/dev/null 2>&1 && selinuxenabled &&
    command -v semodule >/dev/null 2>&1; then
    selinux=yes
    semodule -X 200 -i /usr/share/selinux/packages/pam_totp.pp ||
        echo "pam_totp: WARNING: semodule could not install the SELinux policy module;" \
            "logins that ask for a code may be refused" >&2
fi
# Creates the store at the configured path when missing, migrates an existing one
# forward; enrolled users are kept.
/usr/bin/totp-admin store init
status=$?
# The files rpm and store init made before the module's file contexts were known.
if [ "$selinux" = yes ] && command -v restorecon >/dev/null 2>&1; then
    restorecon -R /etc/pam_totp /var/lib/pam_totp /usr/bin/totp-admin || :
fi
exit $status
