#!/usr/bin/env bash
# The test executables of one workspace package, built with the whole workspace selected,
# as `make build` builds them: `test-bins.sh PACKAGE [TARGET...]` prints one
# "TARGET PATH" line per test target of PACKAGE (all of them, or the TARGETs named;
# `lib` for its unit tests). cargo resolves features over the packages a command selects,
# so `cargo test -p PACKAGE` rebuilt about 100 crates that `make build` had built already
# (2.5 minutes per such command in CI); with --workspace nothing is rebuilt.
#
# Environment: CARGO (cargo). cargo's own messages go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
if [ $# -lt 1 ]; then
  echo "usage: $0 PACKAGE [TARGET...]" >&2
  exit 2
fi
package=$1
shift
wanted='[]'
[ $# -eq 0 ] || wanted=$(printf '%s\n' "$@" | jq -R . | jq -sc .)

listing=$("$CARGO" test --workspace --no-run --message-format=json-render-diagnostics)
found=$(jq -r --arg pkg "$package" --argjson wanted "$wanted" '
  select(.reason == "compiler-artifact" and .executable != null and .profile.test)
  | select(.package_id | test("[/#]" + $pkg + "[@#:]"))
  | (if (.target.kind | index("lib")) then "lib" else .target.name end) as $name
  | select(($wanted | length) == 0 or ($wanted | index($name)))
  | "\($name) \(.executable)"' <<<"$listing")
for t in "$@"; do
  grep -q "^$t " <<<"$found" || { echo "$0: $package has no test target $t" >&2; exit 1; }
done
[ -n "$found" ] || { echo "$0: no test executables for package $package" >&2; exit 1; }
sort <<<"$found"
