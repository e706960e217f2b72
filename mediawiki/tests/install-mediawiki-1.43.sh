#!/usr/bin/env bash
# MediaWiki 1.43 LTS for the end-to-end tests, as root on Debian 12: Debian 13's mediawiki package in a
# chroot at $NSFWOID_MEDIAWIKI_1_43 (default below), which mediawiki/tests/php-1.43 runs PHP in. The host keeps
# its own 1.39. Run after install-debian-packages.sh; it does nothing when this version of the script has
# completed the chroot before.
#
# Debian 13's php-doctrine-dbal 4 brings psr/log 3, which MediaWiki 1.43's BagOStuff::setLogger does not
# accept, so maintenance/generateSchemaSql.php gets the host's Debian 12 DBAL 3.6 and psr/log 1.1, held.
set -euo pipefail
root=${NSFWOID_MEDIAWIKI_1_43:-/var/lib/nsfwoid-tests/mediawiki-1.43}
done_marker=$root/.nsfwoid-complete-$(sha256sum "$0" | cut -c1-16)
[ -e "$done_marker" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq debootstrap >/dev/null
mirror=$(sed -n 's/^URIs: \(.*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
rm -rf "$root" && mkdir -p "$root"
debootstrap --variant=minbase trixie "$root" "${mirror:-http://deb.debian.org/debian}" >/dev/null
# debootstrap writes no /etc/hosts: the migration test reaches PostgreSQL at localhost.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
# The packages' maintainer scripts are chatty in a chroot: their output only if the step fails
log=$(mktemp)
quietly() { "$@" >"$log" 2>&1 || { cat "$log"; return 1; }; }
quietly in_root apt-get update -qq
quietly in_root apt-get install -y -qq --no-install-recommends mediawiki imagemagick php-cli php-sqlite3 \
    php-curl php-intl php-mbstring php-xml php-mysql php-pgsql php-apcu jsonlint php-json-schema \
    librsvg2-bin  # ImageMagick's SVG delegate, rsvg-convert
# The host's Debian 12 packages of the schema generator's libraries
debs=$(mktemp -d) && chmod 755 "$debs"  # apt-get download runs as _apt
held="php-doctrine-dbal php-doctrine-deprecations php-sql-formatter php-doctrine-cache
    php-doctrine-event-manager php-psr-cache php-psr-log"
(cd "$debs" && quietly apt-get download -qq $held)
mkdir -p "$root/tmp/nsfwoid-debs" && cp "$debs"/*.deb "$root/tmp/nsfwoid-debs/" && rm -rf "$debs"
quietly in_root sh -c 'dpkg -i /tmp/nsfwoid-debs/*.deb'
in_root apt-mark hold $held >/dev/null
in_root apt-get check -qq
rm -rf "$root/tmp/nsfwoid-debs"
mkdir -p "$root/usr/share/mediawiki/docs"
for schema in abstract-schema.schema.json abstract-schema-changes.schema.json abstract-schema-table.json; do
    zcat -f "$root"/usr/share/doc/mediawiki/docs/"$schema"* > "$root/usr/share/mediawiki/docs/$schema"
done
in_root apt-get clean
rm -f "$log"
touch "$done_marker"
