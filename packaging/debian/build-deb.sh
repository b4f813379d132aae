#!/bin/sh
# Build the edgefleet-agent Debian package with dpkg-deb:
#
#   packaging/debian/build-deb.sh [--out DIR] [--runtime onnx|tflite] [--wheelhouse DIR]
#
# The package carries a wheelhouse (edgefleet and every dependency, as wheels)
# in /usr/lib/edgefleet-agent/wheelhouse; its postinst creates the virtualenv
# /opt/edgefleet/venv from it with `pip --no-index`, so installing needs no
# network. Without --wheelhouse, `pip wheel` builds one from this checkout for
# the Python and architecture running this script: build on (or in a container
# of) the target release and architecture, e.g. debian:bookworm on arm64.
#
# Architecture: `all` when every wheel is pure Python, otherwise the build
# host's `dpkg --print-architecture`. Wheels built for one CPython (cp311)
# pin the package to that Python minor version: a wheel for 3.11 does not
# load in 3.12, and the pin makes apt say so instead of a failing postinst.
#
# Writes DIR/edgefleet-agent_<version>_<arch>.deb (DIR defaults to build/deb)
# and prints its path.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
PROG=build-deb.sh

die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

usage() {
	sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
}

OUT=$REPO/build/deb
RUNTIME=onnx
WHEELHOUSE=''
PYTHON=${PYTHON:-python3}
while [ $# -gt 0 ]; do
	case $1 in
	--out) [ $# -ge 2 ] || die "--out needs a value"; OUT=$2; shift 2 ;;
	--runtime) [ $# -ge 2 ] || die "--runtime needs a value"; RUNTIME=$2; shift 2 ;;
	--wheelhouse) [ $# -ge 2 ] || die "--wheelhouse needs a value"; WHEELHOUSE=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done
case $RUNTIME in
onnx | tflite) ;;
*) die "--runtime must be onnx or tflite" ;;
esac
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (apt-get install dpkg)"

umask 022
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
LIB=$ROOT/usr/lib/edgefleet-agent
mkdir -p "$ROOT/DEBIAN" "$LIB/wheelhouse" "$ROOT/etc/edgefleet" \
	"$ROOT/lib/systemd/system" "$ROOT/usr/share/doc/edgefleet-agent"

# --- the wheelhouse ---------------------------------------------------------
if [ -n "$WHEELHOUSE" ]; then
	[ -d "$WHEELHOUSE" ] || die "no such wheelhouse directory: $WHEELHOUSE"
	found=0
	for wheel in "$WHEELHOUSE"/*.whl; do
		[ -e "$wheel" ] || continue
		cp "$wheel" "$LIB/wheelhouse/"
		found=1
	done
	[ "$found" -eq 1 ] || die "$WHEELHOUSE holds no .whl files"
else
	echo "==> building the wheelhouse: edgefleet[agent,$RUNTIME] and its dependencies"
	"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$LIB/wheelhouse" \
		"${REPO}[agent,$RUNTIME]" </dev/null || die "pip wheel failed"
fi

# The edgefleet wheel names the version: edgefleet-<version>-<tags>.whl
set -- "$LIB"/wheelhouse/edgefleet-*.whl
if [ $# -ne 1 ] || [ ! -e "$1" ]; then
	die "the wheelhouse must hold exactly one edgefleet-*.whl"
fi
VERSION=$(basename "$1" | cut -d- -f2)
# Python pre-releases sort before the release in Debian only with a tilde.
DEB_VERSION=$(printf '%s' "$VERSION" | sed -E 's/(a|b|rc|\.dev)([0-9]+)$/~\1\2/')

ARCH=all
PYPIN=''
for wheel in "$LIB"/wheelhouse/*.whl; do
	tags=$(basename "$wheel" .whl)
	platform=${tags##*-}
	tags=${tags%-*}
	abi=${tags##*-}
	[ "$platform" = any ] || ARCH=$(dpkg --print-architecture)
	case $abi in
	cp3[0-9]*)
		minor=${abi#cp3}
		minor=${minor%%[!0-9]*}
		[ -z "$PYPIN" ] || [ "$PYPIN" = "$minor" ] ||
			die "the wheelhouse mixes wheels for Python 3.$PYPIN and 3.$minor"
		PYPIN=$minor
		;;
	esac
done
if [ -n "$PYPIN" ]; then
	PYDEPENDS="python3 (>= 3.$PYPIN), python3 (<< 3.$((PYPIN + 1)))"
else
	PYDEPENDS="python3 (>= 3.10)"
fi
printf 'edgefleet[agent,%s]==%s\n' "$RUNTIME" "$VERSION" >"$LIB/requirement"

# --- files --------------------------------------------------------------------
sh "$REPO/packaging/install.sh" --print-config >"$ROOT/etc/edgefleet/agent.toml"
chmod 0640 "$ROOT/etc/edgefleet/agent.toml"
cp "$REPO/packaging/systemd/edgefleet-agent.service" "$ROOT/lib/systemd/system/"
chmod 0644 "$ROOT/lib/systemd/system/edgefleet-agent.service"
cat >"$ROOT/usr/share/doc/edgefleet-agent/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: edgefleet

Files: *
Copyright: edgefleet contributors
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
 The wheels in /usr/lib/edgefleet-agent/wheelhouse carry their own licenses
 in their .dist-info directories.
EOF

# --- control ------------------------------------------------------------------
for script in postinst prerm postrm; do
	cp "$HERE/$script" "$ROOT/DEBIAN/$script"
	chmod 0755 "$ROOT/DEBIAN/$script"
done
echo /etc/edgefleet/agent.toml >"$ROOT/DEBIAN/conffiles"
SIZE_KB=$(du -sk "$ROOT" | cut -f1)
cat >"$ROOT/DEBIAN/control" <<EOF
Package: edgefleet-agent
Version: $DEB_VERSION
Architecture: $ARCH
Maintainer: ${DEB_MAINTAINER:-edgefleet contributors <edgefleet@localhost>}
Installed-Size: $SIZE_KB
Depends: $PYDEPENDS, python3-venv, adduser
Recommends: ca-certificates
Section: net
Priority: optional
Description: edgefleet device agent (fleet-agent)
 Receives signed, quantized machine-learning models (ONNX or TFLite) from an
 edgefleet control plane, verifies and activates them atomically, serves
 local inference and reports health and drift summaries.
 .
 This package installs edgefleet[agent,$RUNTIME] $VERSION into
 /opt/edgefleet/venv from the wheelhouse it carries, without network
 access, and the hardened systemd unit edgefleet-agent.service. Enroll the
 device with fleet-agent enroll before starting the unit.
EOF

mkdir -p "$OUT"
DEB=$OUT/edgefleet-agent_${DEB_VERSION}_$ARCH.deb
# Wheels are zip files already: xz would spend minutes to save little.
dpkg-deb --root-owner-group -Zgzip --build "$ROOT" "$DEB" >/dev/null ||
	die "dpkg-deb failed"
echo "$DEB"
