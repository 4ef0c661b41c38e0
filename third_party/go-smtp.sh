#!/usr/bin/env bash
# go-smtp.sh: third_party/go-smtp is the go-smtp release named below, as the
# Go module cache has it, with the patches in third_party/go-smtp/patches
# applied in order (their index and why: third_party/go-smtp/PATCHES.md).
# go.mod's `replace` builds tlsguard with that copy, offline.
#
#   third_party/go-smtp.sh check   # fail if the copy is not release + patches
#   third_party/go-smtp.sh apply   # rebuild the copy from release + patches
#
# To move to a new release: change VERSION, run `apply`, fix the patches
# that no longer apply (git am / format-patch in a scratch repository), and
# run go-smtp's tests (e2e/test.sh does).
set -euo pipefail
VERSION=v0.26.0
MODULE=github.com/emersion/go-smtp

cd "$(dirname "${BASH_SOURCE[0]}")"
here=$PWD
copy=$here/go-smtp
mode=${1:-}
case $mode in
check | apply) ;;
*)
	echo "usage: $0 check|apply" >&2
	exit 2
	;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The pristine release. Outside any module, so go.mod's replace plays no part.
src=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$src" ] || [ ! -f "$src/go.mod" ]; then
	echo "go-smtp.sh: cannot get $MODULE@$VERSION from the module cache or proxy" >&2
	exit 1
fi
tree=$work/go-smtp
cp -R "$src" "$tree"
chmod -R u+w "$tree"
for p in "$copy"/patches/*.patch; do
	# Outside any repository (a TMPDIR inside one would shift the paths).
	if ! (cd "$tree" && GIT_CEILING_DIRECTORIES=$work git apply --whitespace=nowarn "$p"); then
		echo "go-smtp.sh: $(basename "$p") does not apply to $VERSION" >&2
		exit 1
	fi
done

# The copy also holds the series itself and its index.
own=(--exclude=patches --exclude=PATCHES.md)
case $mode in
check)
	if ! diff -r "${own[@]}" "$tree" "$copy" >"$work/diff"; then
		cat "$work/diff"
		echo "go-smtp.sh: third_party/go-smtp is not go-smtp $VERSION + patches/; run $0 apply" >&2
		exit 1
	fi
	echo "third_party/go-smtp = go-smtp $VERSION + $(ls "$copy"/patches/*.patch | wc -l) patches"
	;;
apply)
	find "$copy" -mindepth 1 -maxdepth 1 ! -name patches ! -name PATCHES.md -exec rm -rf {} +
	cp -R "$tree"/. "$copy"/
	find "$copy" -type d -exec chmod 755 {} + -o -type f -exec chmod 644 {} +
	echo "rebuilt third_party/go-smtp from go-smtp $VERSION + $(ls "$copy"/patches/*.patch | wc -l) patches"
	;;
esac
