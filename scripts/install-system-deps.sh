#!/usr/bin/env bash
# Installs the Debian packages harken's tests and data tools use: TTS voices for generated
# speech, sox, what building KenLM's lmplz needs (compiler, cmake, Boost, compression
# libraries), and Chromium. Does nothing when they are all present; needs root (or sudo) otherwise.
set -euo pipefail
packages=(espeak-ng flite sox libsndfile1 festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festlex-cmu
          build-essential cmake libboost-program-options-dev libboost-system-dev libboost-thread-dev
          libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev
          chromium)  # the server's caption page is tested in headless Chromium (Playwright)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install these packages with your system's package manager: ${missing[*]}" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
