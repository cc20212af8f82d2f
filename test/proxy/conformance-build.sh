#!/usr/bin/env bash
# Builds the OCI distribution-spec conformance suite (pinned) into a cache dir outside the repo, for
# test/proxy/conformance.test.ts. Idempotent: does nothing when the binary is there and its version
# stamp names the pinned version. The suite's code is never copied into the project: the go command
# fetches the module from the Go module proxy into a throwaway module and builds it with `go test -c`.
# Prints the binary's path as its last line of stdout.
#   CAKE_CONFORMANCE_BIN  where the binary goes (default ${XDG_CACHE_HOME:-~/.cache}/cake-ci/conformance.test)
set -euo pipefail

MODULE=github.com/opencontainers/distribution-spec/conformance
VERSION=v0.0.0-20260831232431-97274622c111
STAMP_WANT="$MODULE@$VERSION"

BIN="${CAKE_CONFORMANCE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/cake-ci/conformance.test}"
STAMP="$BIN.version"

if [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_WANT" ]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "conformance-build: the go command is not on PATH" >&2; exit 1; }
mkdir -p "$(dirname "$BIN")"
work="$(mktemp -d "${TMPDIR:-/tmp}/cake-conformance-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "conformance-build: building $STAMP_WANT" >&2
(
  cd "$work"
  export GOFLAGS="${GOFLAGS:-} -mod=mod"
  go mod init cake-conformance-build >/dev/null 2>&1
  go get "$MODULE@$VERSION" >&2
  # `go test -c`: the suite's TestLegacy runs the whole suite from the environment (OCI_*).
  go test -c -o "$work/conformance.test" "$MODULE" >&2
)
# Atomic replace, so a concurrent run never sees a half-written binary.
mv -f "$work/conformance.test" "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"
echo "$STAMP_WANT" >"$STAMP.tmp.$$"
mv -f "$STAMP.tmp.$$" "$STAMP"
echo "$BIN"
