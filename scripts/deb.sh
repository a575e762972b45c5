#!/usr/bin/env bash
# Turn a `make install DESTDIR=<root> PREFIX=/usr` tree into a Debian
# package: strip the binaries, compress the man pages, add the changelog,
# copyright and lintian overrides, write DEBIAN/ (control with the shared
# library dependencies dpkg-shlibdeps computes, conffiles, md5sums,
# maintainer scripts from deploy/debian/) and build it with dpkg-deb.
# Called by `make deb`; usage: scripts/deb.sh ROOT VERSION OUT.deb
set -euo pipefail
root=$(realpath "$1") version=$2 out=$(realpath -m "$3")
here=$(cd "$(dirname "$0")/.." && pwd)
src=$here/deploy/debian
arch=$(dpkg --print-architecture)
# Timestamps from the last commit, so two builds of one commit match.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}

elfs=()
while IFS= read -r f; do
	if [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then elfs+=("$f"); fi
done < <(find "$root/usr/bin" "$root/usr/libexec" -type f)
for f in "${elfs[@]}"; do
	# What dh_strip does: debug info and notes out, symbols for the dynamic
	# linker kept.
	strip --strip-unneeded --remove-section=.comment --remove-section=.note "$f"
done
find "$root/usr/share/man" -type f -name '*.1' -exec gzip -9nf {} +

doc=$root/usr/share/doc/switchboard
install -d "$doc" "$root/usr/share/lintian/overrides"
sed "s/@NATS_VERSION@/${NATS_SERVER_VERSION:?}/" "$src/copyright" > "$doc/copyright"
{
	printf 'switchboard (%s) unstable; urgency=medium\n\n' "$version"
	printf '  * Built from the repository at %s (make deb).\n\n' \
		"$(git -C "$here" describe --always --dirty 2>/dev/null || echo unknown)"
	printf ' -- Switchboard developers <switchboard@example.invalid>  %s\n' \
		"$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$doc/changelog.gz"
install -m 0644 "$src/lintian-overrides" "$root/usr/share/lintian/overrides/switchboard"

# Modes as dpkg expects them whatever the umask was.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -exec chmod 0644 {} +
chmod 0755 "${elfs[@]}"
# /etc/switchboard/secrets (0700) is made by postinst, not shipped.
rmdir "$root/etc/switchboard/secrets"

install -d "$root/DEBIAN"
shlibs=$(
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	mkdir "$tmp/debian"
	printf 'Source: switchboard\n\nPackage: switchboard\nArchitecture: any\n' > "$tmp/debian/control"
	cd "$tmp" && dpkg-shlibdeps -O "${elfs[@]/#/-e}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p'
)
size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
	-e "s/@SHLIBS@/${shlibs:?dpkg-shlibdeps found no libraries}/" \
	"$src/control.in" > "$root/DEBIAN/control"
(cd "$root" && find etc -type f | sed 's|^|/|' | sort) > "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "$src/$s" "$root/DEBIAN/$s"; done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort \
	| xargs md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$(dirname "$out")"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out"
