#!/bin/sh
# Make sure a headless Chromium exists for the report's browser test
# (tests/reports/test_report_browser.py). Called by `make test` (and so by .ci/run).
#
# Installs Debian's `chromium` with apt-get when it is missing and we are root (or have
# password-less sudo). Never fails the build: without apt-get, root or network the browser
# test is skipped and says why.
set -u
LOG="${TMPDIR:-/tmp}/transferkit-chromium-install.log"

found() {
    if [ -n "${TRANSFERKIT_CHROMIUM:-}" ] && command -v "$TRANSFERKIT_CHROMIUM" >/dev/null 2>&1; then
        command -v "$TRANSFERKIT_CHROMIUM"; return 0
    fi
    for b in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
    done
    return 1
}

if path=$(found); then
    echo "chromium: $path"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium: not installed and apt-get is not available; the report's browser test will be skipped"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "chromium: not installed, and installing it needs root (apt-get install chromium);" \
             "the report's browser test will be skipped"
        exit 0
    fi
fi
echo "chromium: installing Debian's chromium with apt-get (log: $LOG)"
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get install -y -q chromium >"$LOG" 2>&1 \
   || { $SUDO apt-get update -q >>"$LOG" 2>&1 && $SUDO apt-get install -y -q chromium >>"$LOG" 2>&1; }; then
    echo "chromium: $(found || echo 'installed, but not on PATH')"
else
    echo "chromium: apt-get install chromium failed (last lines of $LOG below); the report's browser test will be skipped"
    tail -n 5 "$LOG" | sed 's/^/  /'
fi
exit 0
