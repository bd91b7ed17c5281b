#!/bin/bash
# Install the Debian packages the test suite and benchmarks need (Debian 12, run as root).
#
# Only packages that are missing are installed, and `apt-get update` runs only when something is
# missing, so a second run on a prepared machine finishes in well under a second.
#
# Package notes:
# - ceph-mon, ceph-osd, radosgw: a throwaway single-node S3 server (scripts/s3-server.sh).
# - nginx: Debian 12's `nginx` binary package has the core WebDAV module (PUT, DELETE, MKCOL)
#   compiled in; libnginx-mod-http-dav-ext adds PROPFIND/OPTIONS for WebDAV clients such as rclone.
#   That pair is much lighter than nginx-full, which pulls in unrelated third-party modules.
# - nodejs, npm: the OpenID Connect provider of the sign-in tests (npm package oidc-provider, which
#   wants Node.js 20 or later). npm is asked for only when no npm is on the PATH, as builds of
#   nodejs from other repositories (NodeSource) bring their own and conflict with Debian's.
# - fastp: an established FASTQ QC tool whose JSON the standard analysis is checked against
#   (tests/analysis/test_qc.py).
# - chromium: the browser the portal's tests drive through Playwright (never a browser build of
#   Playwright's own); the fonts package gives pages readable text in screenshots. npm (above)
#   installs the browser libraries the portal's tests load (tests/browser/package.json).
set -euo pipefail

PACKAGES=(
  postgresql
  ceph-mon
  ceph-osd
  radosgw
  uuid-runtime
  curl
  nginx
  libnginx-mod-http-dav-ext
  rsync
  rclone
  nodejs
  fastp
  chromium
  fonts-dejavu-core
)
if ! command -v npm >/dev/null; then
  PACKAGES+=(npm)
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps.sh: must run as root (apt-get install)" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  # dpkg -s also lists removed-but-configured packages, so check the status line itself.
  if ! dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps.sh: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-test-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-test-deps.sh: done in ${SECONDS}s"
