#!/usr/bin/perl
# Builds a small MaxMind DB for the tests with Debian's MaxMind DB writer
# (libmaxmind-db-writer-perl):
#
#   perl mkmmdb.pl OUT.mmdb < spec.json
#
# spec.json:
#   {"ip_version": 6, "alias_ipv6_to_ipv4": 1,
#    "types": {"score": "uint32", "category": "utf8_string", "traits": "map", ...},
#    "networks": [["192.0.2.0/24", {"score": 5, "category": "test"}], ...]}
#
# JSON true/false become MMDB booleans. Exits 77 (skip) when the writer is not installed.
use strict;
use warnings;
use JSON::PP;

my $ok = eval { require MaxMind::DB::Writer::Tree; 1 };
if (!$ok) {
    print STDERR "mkmmdb.pl: MaxMind::DB::Writer::Tree not installed (apt install libmaxmind-db-writer-perl)\n";
    exit 77;
}

my $out = shift @ARGV or die "usage: $0 OUT.mmdb < spec.json\n";
my $json = do { local $/; <STDIN> };
my $spec = JSON::PP->new->decode($json);

sub plain {
    my ($v) = @_;
    if (JSON::PP::is_bool($v)) { return $v ? 1 : 0; }
    if (ref $v eq 'HASH') { return { map { $_ => plain($v->{$_}) } keys %$v }; }
    if (ref $v eq 'ARRAY') { return [ map { plain($_) } @$v ]; }
    return $v;
}

my %types = %{ $spec->{types} || {} };
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version            => $spec->{ip_version} || 6,
    record_size           => $spec->{record_size} || 24,
    database_type         => 'spop-agent-test',
    languages             => ['en'],
    description           => { en => 'spop agent test database' },
    alias_ipv6_to_ipv4    => ($spec->{alias_ipv6_to_ipv4} ? 1 : 0),
    remove_reserved_networks => 0,
    map_key_type_callback => sub { $types{ $_[0] } // 'utf8_string' },
);
for my $n (@{ $spec->{networks} }) {
    $tree->insert_network($n->[0], plain($n->[1]));
}
open(my $fh, '>:raw', $out) or die "$out: $!\n";
$tree->write_tree($fh);
close($fh) or die "$out: $!\n";
