#!/bin/sh
# Writes packaging/copyright (Debian's machine-readable format, shipped in both
# packages) and the `license` lines of [package.metadata.generate-rpm] in
# pam_totp/Cargo.toml from Cargo.lock: pam_totp itself, the SQLite library that
# libsqlite3-sys builds into the module, and every crate compiled into pam_totp.so and
# totp-admin (`cargo tree -e normal`: the proc-macro crates whose output is compiled in
# too), with the PostgreSQL flavour's own crates marked.
#
#   packaging/gen-copyright.sh           rewrite both after a change to Cargo.lock
#   packaging/gen-copyright.sh --check   exit 1 when either is out of date
#
# Neither needs the network once the crates are downloaded. A licence name needs its
# text in packaging/licenses/NAME (and a place in deny.toml's allow list).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

check=false
case "${1:-}" in
--check) check=true ;;
"") ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The crates compiled into the two programs, per flavour: "NAME VERSION" lines. Path
# dependencies (the workspace members) are pam_totp's own sources.
compiled() {
    cargo tree --locked -e normal --prefix none -p pam_totp -p totp-admin \
        --target x86_64-unknown-linux-gnu -f '{p}' "$@" |
        grep -v ' (/' | sed -e 's/ (proc-macro)//' -e 's/ (\*)//' -e 's/ v/ /' |
        grep -v '^$' | sort -u
}
compiled >"$work/plain"
compiled --features pam_totp/postgresql >"$work/postgresql"
cargo metadata --locked --format-version 1 --all-features \
    --filter-platform x86_64-unknown-linux-gnu >"$work/metadata.json"

cp pam_totp/Cargo.toml "$work/Cargo.toml"
perl - "$work" <<'PERL'
use strict;
use warnings;
use JSON::PP;

my ($work) = @ARGV;
sub slurp {
    my ($file) = @_;
    open my $in, '<:encoding(UTF-8)', $file or die "$file: $!\n";
    local $/;
    <$in>;
}
sub spew {
    my ($file, $text) = @_;
    open my $out, '>:encoding(UTF-8)', $file or die "$file: $!\n";
    print $out $text;
    close $out or die "$file: $!\n";
}
sub lines { my %set = map { $_ => 1 } split /\n/, slurp(@_); \%set }

my $plain = lines("$work/plain");
my $postgresql = lines("$work/postgresql");
my $metadata = JSON::PP->new->decode(slurp("$work/metadata.json"));
my %package = map { ("$_->{name} $_->{version}" => $_) } @{ $metadata->{packages} };

# An SPDX expression as its top-level AND terms, each a sorted list of OR alternatives.
sub terms {
    my ($spdx, $what) = @_;
    $spdx =~ s{/}{ OR }g;    # the old "MIT/Apache-2.0" form
    my @terms;
    for my $term (split /\s+AND\s+(?![^(]*\))/, $spdx) {
        $term =~ s/^\s*\((.*)\)\s*$/$1/;
        die "gen-copyright: $what: cannot read the licence expression \"$spdx\"\n"
          if $term =~ /[()]|\bAND\b|\bWITH\b/;
        push @terms, [sort split /\s+OR\s+/, $term];
    }
    @terms;
}

# Debian's syntax: "A or B, and C" (the comma binds loosest).
sub debian_expression {
    my @terms = map { join ' or ', @$_ } @_;
    join((grep { / or / } @terms) ? ', and ' : ' and ', @terms);
}

my (%used, %rpm_terms);
my @paragraphs;
for my $key (sort { lc $a cmp lc $b } keys %{ { %$plain, %$postgresql } }) {
    my $p = $package{$key} or die "gen-copyright: $key is not in cargo metadata\n";
    die "gen-copyright: $key comes from $p->{source}, not crates.io\n"
      unless ($p->{source} // '') =~ m{^registry\+https://github\.com/rust-lang/crates\.io-index$};
    my $license = $p->{license}
      or die "gen-copyright: $key declares no SPDX licence (license-file only)\n";
    my @terms = terms($license, $key);
    $used{$_} = 1 for map { @$_ } @terms;
    for my $flavour ('plain', 'postgresql') {
        next if $flavour eq 'plain' && !$plain->{$key};
        $rpm_terms{$flavour}{ join ' OR ', @$_ } = 1 for @terms;
    }
    my @authors = @{ $p->{authors} || [] };
    @authors = ("the $p->{name} authors") unless @authors;
    my $comment = "$p->{name} $p->{version} from crates.io";
    $comment .= "\n $p->{repository}" if $p->{repository};
    $comment .= "\n Only in the PostgreSQL flavour." unless $plain->{$key};
    push @paragraphs, join "\n",
      "Files: $p->{name}-$p->{version}/*",
      "Copyright: " . join("\n ", @authors),
      "License: " . debian_expression(@terms),
      "Comment: $comment";

    if ($p->{name} eq 'libsqlite3-sys') {
        (my $dir = $p->{manifest_path}) =~ s{/Cargo\.toml$}{};
        my ($version) = slurp("$dir/sqlite3/sqlite3.h") =~ /^#define SQLITE_VERSION\s+"([^"]+)"/m
          or die "gen-copyright: no SQLITE_VERSION in $dir/sqlite3/sqlite3.h\n";
        $used{'public-domain'} = 1;
        $rpm_terms{$_}{blessing} = 1 for 'plain', 'postgresql';
        push @paragraphs, join "\n",
          "Files: $p->{name}-$p->{version}/sqlite3/*",
          "Copyright: none: dedicated to the public domain by D. Richard Hipp and the",
          " other authors of SQLite",
          "License: public-domain",
          "Comment: SQLite $version, which libsqlite3-sys (feature \"bundled\") compiles",
          " into pam_totp.so and totp-admin.";
    }
}
$rpm_terms{$_}{'Apache-2.0 OR MIT'} = 1 for 'plain', 'postgresql';    # pam_totp itself
# The authselect profile the .rpm carries (packaging/authselect/totp/) is derived from
# authselect's own profiles.
$rpm_terms{$_}{'GPL-3.0-or-later'} = 1 for 'plain', 'postgresql';
$used{'GPL-3.0-or-later'} = 1;
push @paragraphs, join "\n",
  "Files: packaging/authselect/*",
  "Copyright: Red Hat, Inc. and the authselect authors; 2026 pam_totp contributors",
  "License: GPL-3.0-or-later",
  "Comment: the authselect vendor profile \"totp\", derived from the \"local\" profile of",
  " authselect 1.5.0 (https://github.com/authselect/authselect). Only the .rpm",
  " carries it.";

# A licence paragraph's text is indented by one space; empty lines become " .".
sub license_paragraph {
    my ($name) = @_;
    my $file = "packaging/licenses/$name";
    -f $file or die "gen-copyright: no text for the licence $name: add it as $file\n";
    my $text = slurp($file);
    $text =~ s/\s+\z//;
    $text = join "\n", map { length ? " $_" : ' .' } map { s/\s+$//r } split /\n/, $text;
    "License: $name\n$text";
}
$used{$_} = 1 for 'MIT', 'Apache-2.0';

my $copyright = join "\n\n",
  join("\n",
    'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
    'Upstream-Name: pam_totp',
    'Upstream-Contact: pam_totp maintainers <pam-totp@example.invalid>',
    'Source: https://example.invalid/pam_totp',
    'Comment: pam_totp.so and totp-admin are built from the pam_totp sources and the',
    ' crates below (those that generate code at build time included), at the',
    ' versions in Cargo.lock; "Files: NAME-VERSION/*" is the crate as Cargo unpacks',
    ' it. SQLite is compiled into both programs. This file is written by',
    ' packaging/gen-copyright.sh from Cargo.lock: change that script or',
    ' packaging/licenses/, not this file.'),
  join("\n",
    'Files: *',
    'Copyright: 2026 pam_totp contributors',
    'License: MIT or Apache-2.0',
    ' pam_totp is dual-licensed: you may use it under the terms of either the MIT',
    ' license or the Apache License, Version 2.0, at your option.'),
  @paragraphs,
  map { license_paragraph($_) } sort { lc $a cmp lc $b } keys %used;
spew("$work/copyright", "$copyright\n");

# RPM: the SPDX expression of everything in the package, one AND term per licence
# choice, in the [package.metadata.generate-rpm] section and its PostgreSQL variant.
sub rpm_expression {
    my ($terms) = @_;
    join ' AND ', map { / OR / ? "($_)" : $_ } sort { lc $a cmp lc $b } keys %$terms;
}
my $toml = slurp("$work/Cargo.toml");
for (['package.metadata.generate-rpm', 'plain'],
     ['package.metadata.generate-rpm.variants.postgresql', 'postgresql']) {
    my ($section, $flavour) = @$_;
    my $line = 'license = "' . rpm_expression($rpm_terms{$flavour}) . '"';
    $toml =~ s/^(\[\Q$section\E\]\n(?:(?!\[).*\n)*?)license = ".*"$/$1$line/m
      or die "gen-copyright: no license line in [$section] of pam_totp/Cargo.toml\n";
}
spew("$work/Cargo.toml.new", $toml);
PERL

if $check; then
    stale=""
    cmp -s "$work/copyright" packaging/copyright || stale="packaging/copyright"
    cmp -s "$work/Cargo.toml.new" pam_totp/Cargo.toml ||
        stale="${stale:+$stale and }the RPM licence lines in pam_totp/Cargo.toml"
    if [ -n "$stale" ]; then
        diff -u packaging/copyright "$work/copyright" >&2 || :
        diff -u pam_totp/Cargo.toml "$work/Cargo.toml.new" >&2 || :
        echo "gen-copyright: out of date with Cargo.lock: $stale;" \
            "run packaging/gen-copyright.sh and commit the result" >&2
        exit 1
    fi
    echo "packaging/copyright and the RPM licences match Cargo.lock"
else
    cp "$work/copyright" packaging/copyright
    cp "$work/Cargo.toml.new" pam_totp/Cargo.toml
fi
