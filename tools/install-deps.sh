#!/bin/sh
# install-deps.sh MODE: installs the Debian packages that a make target needs.
#
#   test   building goro and running its test suite, with the ASan, UBSan
#          and TSan builds (gcc links the sanitizer runtimes libasan8,
#          libubsan1 and libtsan2)
#   demo   building goro and the demo
#   bench  the benchmark suite: Go, Boost.Context, mimalloc, gnuplot and
#          hyperfine for the comparison runs and their plots
#   prometheus  promtool, for `make check-prometheus` (Debian ships it in the
#          prometheus package, with the server and its web assets)
#
# Only packages that dpkg does not report as installed are installed, so a
# machine that has everything prints nothing and makes no network request.
# As root the script runs apt-get itself. Otherwise it uses sudo, and on a
# machine without sudo it lists the missing packages and exits 1.
set -eu

usage() {
  echo "usage: $0 test|demo|bench|prometheus" >&2
  exit 2
}

[ $# -eq 1 ] || usage
case "$1" in
test) packages="gcc make libc6-dev binutils libasan8 libubsan1 libtsan2 procps" ;;
demo) packages="gcc make libc6-dev" ;;
bench) packages="gcc g++ make libc6-dev binutils python3 golang-go libboost-context-dev gnuplot-nox libmimalloc-dev hyperfine" ;;
prometheus) packages="gcc make libc6-dev prometheus" ;;
*) usage ;;
esac

missing=""
for pkg in $packages; do
  # "ii" is dpkg's state for a package that is wanted and fully installed.
  state=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  case "$state" in
  ii*) ;;
  *) missing="$missing $pkg" ;;
  esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "install-deps: missing Debian packages:$missing" >&2
  echo "install-deps: run as root: apt-get install$missing" >&2
  exit 1
fi

echo "install-deps: installing$missing"
# The package lists of a fresh machine may be empty or stale, so they are
# refreshed here, which is reached only when something must be installed.
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086 # the package list is meant to split into words
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
