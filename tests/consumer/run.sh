#!/usr/bin/env bash
# Consumer projects: a custom agent on spop::server (tests/consumer/subproject/agent.cpp) built
#   1. by a meson project that has spop as a subproject (subprojects/spop -> this tree), and
#   2. by one that finds an installed spop through pkg-config (meson install into a temporary
#      prefix, PKG_CONFIG_PATH pointing at it),
# each in a temporary directory; then each agent is started on loopback and checked with
# tests/server/agent_check.py (HELLO, NOTIFY, ACK contents, SIGTERM, exit 0). Cleans up.
# usage: tests/consumer/run.sh [SPOP_SOURCE_DIR]      (MESON, NINJA, PYTHON3 override the tools)
set -euo pipefail
src=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
meson=${MESON:-meson}
ninja=${NINJA:-ninja}
python3=${PYTHON3:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/spop-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log=$tmp/log
step() { printf 'consumer: %s\n' "$*"; }
# Quiet on success; the tool's output when a step fails.
run() {
  if ! "$@" >"$log" 2>&1; then
    cat "$log"
    echo "consumer: FAILED: $*" >&2
    exit 1
  fi
}
check_agent() {
  local rc=0
  "$python3" "$src/tests/server/agent_check.py" --agent "$1" --service path || rc=$?
  [[ $rc -eq 0 || $rc -eq 77 ]] || { echo "consumer: FAILED: $1 on loopback" >&2; exit 1; }
}

cp -r "$src/tests/consumer" "$tmp/consumer"

step "1. spop as a subproject"
mkdir -p "$tmp/consumer/subproject/subprojects"
ln -s "$src" "$tmp/consumer/subproject/subprojects/spop"
# --force-fallback-for: the subproject even where an installed spop.pc exists.
run "$meson" setup "$tmp/build-sub" "$tmp/consumer/subproject" --force-fallback-for=spop
run "$ninja" -C "$tmp/build-sub"
grep -q "Executing subproject spop" "$tmp/build-sub/meson-logs/meson-log.txt" ||
  { echo "consumer: FAILED: spop was not used as a subproject" >&2; exit 1; }
check_agent "$tmp/build-sub/path_agent"

step "2. spop installed, found with pkg-config"
run "$meson" setup "$tmp/build-spop" "$src" --prefix "$tmp/prefix" \
  -Dagent=disabled -Dtests=disabled -Dbench=disabled -Dexamples=disabled -Dmmdb=disabled
run "$meson" install -C "$tmp/build-spop"
pc=$(find "$tmp/prefix" -name spop.pc -print -quit)
[[ -n $pc && -f $tmp/prefix/include/spop/server/server.hpp ]] ||
  { echo "consumer: FAILED: no spop.pc or server headers under the install prefix" >&2; exit 1; }
PKG_CONFIG_PATH=$(dirname "$pc") run "$meson" setup "$tmp/build-pc" "$tmp/consumer/pkgconfig"
run "$ninja" -C "$tmp/build-pc"
# It compiled against the installed headers, not this tree's.
grep -q -- "-I$tmp/prefix/include" "$tmp/build-pc/build.ninja" ||
  { echo "consumer: FAILED: the pkg-config build does not use $tmp/prefix/include" >&2; exit 1; }
if grep -q -- "$src/include" "$tmp/build-pc/build.ninja"; then
  echo "consumer: FAILED: the pkg-config build sees $src/include" >&2
  exit 1
fi
check_agent "$tmp/build-pc/path_agent"
step "ok"
