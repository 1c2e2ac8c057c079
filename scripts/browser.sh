#!/usr/bin/env bash
# Headless Chromium for the browser test (tests/test_mlflow_record.py): Debian's package, installed
# with apt-get when it is missing and we are root; otherwise a note (that test then skips, CI fails it).
set -euo pipefail
for b in chromium chromium-browser google-chrome; do
  command -v "$b" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "browser: installing chromium (apt-get) for the report test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
else
  echo "browser: no chromium and no root apt-get: the browser test will be skipped (apt-get install chromium)"
fi
