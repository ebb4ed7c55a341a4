# shellcheck shell=sh
# private_tmp STAGE SIZE NAME [KEEP...]
#
# Inside a private mount namespace: mounts a new, empty tmpfs (mode 1777, SIZE, named
# NAME in the mount table) on /tmp, in which each KEEP directory that lies under /tmp is
# bound back at its own path. A checkout, a build or a sandbox under /tmp (a clone in
# /tmp, CARGO_TARGET_DIR=$(mktemp -d)) thus stays where the programs inside look for it.
# The tmpfs is mounted at STAGE first (a directory outside the KEEP directories, made
# when missing), the KEEP directories are bound into it while they can still be seen,
# and then it is moved over /tmp. Sourced by the test harness (tests/src/lib.rs) and by
# tests/bench/run.sh.
private_tmp() {
    _stage=$1 _size=$2 _name=$3
    shift 3
    mkdir -p "$_stage" && mount -t tmpfs -o "mode=1777,size=$_size" "$_name" "$_stage" || return 1
    for _keep in "$@"; do
        case "$_keep" in
        /tmp/?*) ;;
        *) continue ;;
        esac
        [ -d "$_keep" ] || continue
        _at=$_stage/${_keep#/tmp/}
        # Directories on the way in are traversable by the unprivileged test users,
        # whatever the umask the programs inside inherit.
        (umask 022 && mkdir -p "$_at") && mount --bind "$_keep" "$_at" || return 1
    done
    mount --move "$_stage" /tmp
}
