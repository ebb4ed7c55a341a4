#!/bin/sh
# Writes the Debian changelog of the .deb from NEWS, the one place where changes are
# written down:
#
#   packaging/gen-changelog.sh OUTPUT
#
# Each NEWS entry ("0.2.0 (unreleased)" or "0.1.0 (2026-11-24)", then "* " items whose
# continuation lines are indented by two spaces) becomes one changelog entry, version
# VERSION-1. A dated entry is released ("unstable", that date); an unreleased one is
# UNRELEASED, dated by the last commit (or now, outside a git checkout). The maintainer
# is the one in [package.metadata.deb] of pam_totp/Cargo.toml.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
[ $# = 1 ] || {
    echo "usage: $0 OUTPUT" >&2
    exit 2
}
output=$1

maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' "$root/pam_totp/Cargo.toml")
[ -n "$maintainer" ] || {
    echo "gen-changelog: no maintainer in pam_totp/Cargo.toml" >&2
    exit 1
}
unreleased_date=$(git -C "$root" log -1 --format=%cD 2>/dev/null || date -R)

# NEWS to "version|date" heading lines and indented item lines, one pass; the dates
# are formatted afterwards with date(1).
awk -v maintainer="$maintainer" '
    function close_entry() {
        if (version != "") printf "\n -- %s  @DATE %s@\n\n", maintainer, date
    }
    /^[0-9]+\.[0-9]+\.[0-9]+ \((unreleased|[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9])\)$/ {
        close_entry()
        version = $1
        date = substr($2, 2, length($2) - 2)
        distribution = (date == "unreleased") ? "UNRELEASED" : "unstable"
        printf "pam-totp (%s-1) %s; urgency=medium\n\n", version, distribution
        next
    }
    version == "" || /^$/ { next }
    /^\* / { print "  " $0; next }
    /^  [^ ]/ { print "  " $0; next }
    { printf "gen-changelog: NEWS line %d is neither a heading nor an item: %s\n", NR, $0 > "/dev/stderr"; bad = 1; exit 1 }
    END { if (bad) exit 1; if (version == "") { print "gen-changelog: NEWS has no entry" > "/dev/stderr"; exit 1 }; close_entry() }
' "$root/NEWS" >"$output.tmp"

# "@DATE 2026-11-24@" to an RFC 2822 date; "@DATE unreleased@" to the last commit's.
: >"$output"
while IFS= read -r line; do
    case "$line" in
    *"@DATE "*"@")
        day=${line##*@DATE }
        day=${day%@}
        if [ "$day" = unreleased ]; then
            stamp=$unreleased_date
        else
            stamp=$(LC_ALL=C date -u -R -d "$day")
        fi
        printf '%s\n' "${line%%@DATE *}$stamp" >>"$output"
        ;;
    *) printf '%s\n' "$line" >>"$output" ;;
    esac
done <"$output.tmp"
rm -f "$output.tmp"
# No blank line at the end.
sed -i -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$output"
