#!/usr/bin/env bash
# Whether `make run`'s packages (RUN_PACKAGES, from the Makefile) resolve
# every dependency with the same features as `make build` (the workspace):
# if not, each of the two builds recompiles what the other built. Prints
# each dependency that differs and the features the workspace uses (add
# them to workspace-hack/Cargo.toml). Resolution only, nothing is compiled:
# about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
packages=${RUN_PACKAGES:?set RUN_PACKAGES, e.g. "-p switchboard-orchestrator"}
tree() {
  # shellcheck disable=SC2086
  "$cargo" tree -e normal,build -f '{p} {f}' --prefix none "$@" \
    | sed -e 's/ (\*)$//' -e 's/ (proc-macro)//' | sort -u
}
ws=$(tree --workspace)
# shellcheck disable=SC2086
run=$(tree $packages)
diff=$(comm -13 <(echo "$ws") <(echo "$run"))
if [ -n "$diff" ]; then
  echo "make run's packages resolve these dependencies with other features than the workspace:" >&2
  while read -r name version _; do
    echo "  $name $version: run has [$(grep "^$name $version" <<<"$run" | cut -d' ' -f3-)], workspace has [$(grep "^$name $version" <<<"$ws" | cut -d' ' -f3-)]" >&2
  done <<<"$diff"
  echo "add the workspace's features to workspace-hack/Cargo.toml" >&2
  exit 1
fi
echo "make run and make build resolve the same features ($(wc -l <<<"$run") packages)"
