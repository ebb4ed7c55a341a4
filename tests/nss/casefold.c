/*
 * libnss_casefold.so.2: an NSS module for the end-to-end tests, loaded only inside a
 * sandbox (see tests/src/nss_support.rs). It stands for a directory service that
 * matches names without regard to case, and for one whose server cannot be reached:
 *
 * - passwd, shadow: a name with upper-case letters resolves to the /etc/passwd
 *   (/etc/shadow) entry of its lower-case spelling, which keeps its own, lower-case,
 *   name. A name already in lower case is not found here (files has answered it).
 * - group: a name starting with "unreachable" fails with NSS_STATUS_UNAVAIL and errno
 *   ENOENT, as sssd's client does when its daemon is down; one starting with
 *   "tryagain" fails with NSS_STATUS_TRYAGAIN and errno EAGAIN. Every other group
 *   name is not found here. Upper-case group names resolve like user names.
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <nss.h>
#include <pwd.h>
#include <shadow.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The lower-case spelling of name, or NULL when it has no upper-case letter. */
static char *folded(const char *name)
{
    int upper = 0;
    for (const char *p = name; *p; p++)
        if (isupper((unsigned char)*p))
            upper = 1;
    if (!upper)
        return NULL;
    char *lower = strdup(name);
    if (lower == NULL)
        return NULL;
    for (char *p = lower; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return lower;
}

enum nss_status _nss_casefold_getpwnam_r(const char *name, struct passwd *pwd,
                                         char *buf, size_t buflen, int *errnop)
{
    char *lower = folded(name);
    if (lower == NULL) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    FILE *f = fopen("/etc/passwd", "re");
    if (f == NULL) {
        free(lower);
        *errnop = errno;
        return NSS_STATUS_UNAVAIL;
    }
    enum nss_status status = NSS_STATUS_NOTFOUND;
    struct passwd *found;
    int rc;
    while ((rc = fgetpwent_r(f, pwd, buf, buflen, &found)) == 0) {
        if (strcmp(found->pw_name, lower) == 0) {
            status = NSS_STATUS_SUCCESS;
            break;
        }
    }
    if (rc == ERANGE) {
        *errnop = ERANGE;
        status = NSS_STATUS_TRYAGAIN;
    } else if (status == NSS_STATUS_NOTFOUND) {
        *errnop = ENOENT;
    }
    fclose(f);
    free(lower);
    return status;
}

enum nss_status _nss_casefold_getpwuid_r(uid_t uid, struct passwd *pwd, char *buf,
                                         size_t buflen, int *errnop)
{
    (void)uid, (void)pwd, (void)buf, (void)buflen;
    *errnop = ENOENT;
    return NSS_STATUS_NOTFOUND;
}

enum nss_status _nss_casefold_getspnam_r(const char *name, struct spwd *sp, char *buf,
                                         size_t buflen, int *errnop)
{
    char *lower = folded(name);
    if (lower == NULL) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    FILE *f = fopen("/etc/shadow", "re");
    if (f == NULL) {
        free(lower);
        *errnop = errno;
        return NSS_STATUS_UNAVAIL;
    }
    enum nss_status status = NSS_STATUS_NOTFOUND;
    struct spwd *found;
    int rc;
    while ((rc = fgetspent_r(f, sp, buf, buflen, &found)) == 0) {
        if (strcmp(found->sp_namp, lower) == 0) {
            status = NSS_STATUS_SUCCESS;
            break;
        }
    }
    if (rc == ERANGE) {
        *errnop = ERANGE;
        status = NSS_STATUS_TRYAGAIN;
    } else if (status == NSS_STATUS_NOTFOUND) {
        *errnop = ENOENT;
    }
    fclose(f);
    free(lower);
    return status;
}

enum nss_status _nss_casefold_getgrnam_r(const char *name, struct group *grp, char *buf,
                                         size_t buflen, int *errnop)
{
    if (strncmp(name, "unreachable", strlen("unreachable")) == 0) {
        *errnop = ENOENT;
        return NSS_STATUS_UNAVAIL;
    }
    if (strncmp(name, "tryagain", strlen("tryagain")) == 0) {
        *errnop = EAGAIN;
        return NSS_STATUS_TRYAGAIN;
    }
    char *lower = folded(name);
    if (lower == NULL) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    FILE *f = fopen("/etc/group", "re");
    if (f == NULL) {
        free(lower);
        *errnop = errno;
        return NSS_STATUS_UNAVAIL;
    }
    enum nss_status status = NSS_STATUS_NOTFOUND;
    struct group *found;
    int rc;
    while ((rc = fgetgrent_r(f, grp, buf, buflen, &found)) == 0) {
        if (strcmp(found->gr_name, lower) == 0) {
            status = NSS_STATUS_SUCCESS;
            break;
        }
    }
    if (rc == ERANGE) {
        *errnop = ERANGE;
        status = NSS_STATUS_TRYAGAIN;
    } else if (status == NSS_STATUS_NOTFOUND) {
        *errnop = ENOENT;
    }
    fclose(f);
    free(lower);
    return status;
}

enum nss_status _nss_casefold_getgrgid_r(gid_t gid, struct group *grp, char *buf,
                                         size_t buflen, int *errnop)
{
    (void)gid, (void)grp, (void)buf, (void)buflen;
    *errnop = ENOENT;
    return NSS_STATUS_NOTFOUND;
}

/* Membership comes from files alone. */
enum nss_status _nss_casefold_initgroups_dyn(const char *user, gid_t group, long *start,
                                             long *size, gid_t **groupsp, long limit,
                                             int *errnop)
{
    (void)user, (void)group, (void)start, (void)size, (void)groupsp, (void)limit;
    *errnop = ENOENT;
    return NSS_STATUS_NOTFOUND;
}
