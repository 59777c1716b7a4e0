#!/usr/bin/env bash
# Installs the Debian bookworm packages keysvc needs to build, test and run its demo.
# Idempotent: packages already present are left alone and apt is not touched at all
# when nothing is missing.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake pkg-config make
  # crypto, PKCS#11 and the embedded token
  libssl-dev openssl softhsm2 libp11-kit-dev p11-kit p11-kit-modules libp11-dev opensc
  libengine-pkcs11-openssl
  # the second and third PKCS#11 implementations the tests run on (docs/DEPLOYMENT.md):
  # opencryptoki's soft token behind pkcsslotd, and a software TPM 2.0 through tpm2-pkcs11
  # with tpm2-abrmd as resource manager on a private D-Bus session bus
  opencryptoki libopencryptoki0
  swtpm swtpm-tools tpm2-tools tpm2-abrmd libtss2-tcti-swtpm0 libtss2-tcti-tabrmd0 dbus-daemon
  libtpm2-pkcs11-1 libtpm2-pkcs11-tools
  # libraries
  libspdlog-dev libfmt-dev libcli11-dev libtomlplusplus-dev prometheus-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # real peers for tests and the demo (nginx: the binary package nginx-dev matches,
  # version for version, so the keysvc module loads into it)
  gnutls-bin curl nginx nginx-dev
  # Apache httpd for mod_keysvc and its tests (apache2-dev: apxs and the headers)
  apache2 apache2-dev
  # Debian packages (make deb, the package test): Debian's build tools, lintian, and
  # help2man for the manual pages
  dpkg-dev debhelper lintian help2man
  # fuzzing (make fuzz, make test's fuzz smoke): clang with libFuzzer and the sanitizer runtimes
  clang libclang-rt-14-dev
  # scripts (demo, bench result checks)
  python3
  # a real browser for the audit report's HTML page (headless: tests, demo screenshot)
  chromium
  # core dumps of a running server (gcore) for the secret-memory test (docs/SECURITY.md)
  gdb
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root (or: sudo $0)" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# nginx's and apache2's postinst start system servers on port 80; keysvc's tests run
# their own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx apache2 >/dev/null 2>&1 || true; fi
# Likewise the system's pkcsslotd and tpm2-abrmd: the tests start private ones.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now pkcsslotd tpm2-abrmd >/dev/null 2>&1 || true; fi
echo "install-deps: done"
