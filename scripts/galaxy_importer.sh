#!/usr/bin/env bash
# Imports the built collection offline as Galaxy does (galaxy-importer), twice: with Galaxy's
# defaults, then with require_v1_or_greater. Fails on an ERROR or a WARNING in either log that
# docs/publishing.md does not keep ("## galaxy-importer"), and on a changelog that
# antsibull-changelog does not pass (lint, and CHANGELOG.md as `generate` writes it).
# The tools live in a venv of their own (they pin their own ansible-core and ansible-lint),
# made here from requirements/tools-galaxy.txt when missing: ~/.cache/gpu_lab/galaxy-importer/.
# Usage: scripts/galaxy_importer.sh [--keep DIR]   (DIR: keep the tarball and the logs there)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '\033[1m[galaxy-importer]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[galaxy-importer]\033[0m %s\n' "$*" >&2; exit 1; }

# Warnings kept on purpose, one extended regex each, with the reason in docs/publishing.md.
allowed_warnings=(
  # ansible-test's ignore files (tests/sanity/ignore-2.X.txt): each is one warning; their
  # statements are the decisions of docs/publishing.md, "## ansible-test sanity".
  'Ignore files skip ansible-test sanity tests, found ignore-2\.[0-9]+\.txt with [0-9]+ statement\(s\)'
)

keep=""
[[ "${1:-}" == "--keep" ]] && keep=${2:?--keep needs a folder}

# The Python the project's .venv was made with, else the first 3.12+ on the PATH.
python=""
if [[ -x "$repo/.venv/bin/python" ]]; then
  python=$("$repo/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
fi
if [[ -z "$python" || ! -x "$python" ]]; then
  for c in "${GPU_LAB_PYTHON:-}" python3.13 python3.12 python3; do
    [[ -n "$c" ]] && command -v "$c" >/dev/null 2>&1 && \
      "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null && { python=$(command -v "$c"); break; }
  done
fi
[[ -n "$python" ]] || die "no Python 3.12 or newer found (scripts/bootstrap.sh says how to get one)"

want=$( (cat "$repo/requirements/tools-galaxy.txt"; "$python" -V) | sha256sum | cut -c1-16)
venv="${GPU_LAB_CACHE:-$HOME/.cache/gpu_lab}/galaxy-importer/$want"
if [[ ! -x "$venv/bin/antsibull-changelog" ]] || ! "$venv/bin/python" -c 'import galaxy_importer, antsibull_changelog' 2>/dev/null; then
  say "creating the tools' venv ($venv) with $("$python" -V); pip install takes about two minutes"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check -r "$repo/requirements/tools-galaxy.txt" \
      >"$venv.pip.log" 2>&1; then
    tail -20 "$venv.pip.log" >&2
    rm -rf "$venv"
    die "pip install failed (see the lines above)"
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only the tools' venv: no ANSIBLE_* or GALAXY_IMPORTER_* setting of the caller decides.
tool_env=(env -u ANSIBLE_CONFIG -u ANSIBLE_COLLECTIONS_PATH -u ANSIBLE_COLLECTIONS_PATHS
          -u GALAXY_IMPORTER_REQUIRE_V1_OR_GREATER -u GALAXY_IMPORTER_RUN_ANSIBLE_LINT
          -u GALAXY_IMPORTER_RUN_ANSIBLE_DOC -u GALAXY_IMPORTER_CHECK_CHANGELOG
          PATH="$venv/bin:$PATH" ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" ANSIBLE_NOCOLOR=1)

status=0

# The changelog: fragments and changelogs/changelog.yaml lint clean, and CHANGELOG.md is what
# antsibull-changelog writes from them (generated in a copy, compared).
say "antsibull-changelog lint"
(cd "$repo" && "${tool_env[@]}" antsibull-changelog lint) || { say "FAIL: antsibull-changelog lint"; status=1; }
mkdir -p "$work/changelog"
cp -r "$repo/galaxy.yml" "$repo/changelogs" "$repo/CHANGELOG.md" "$work/changelog/"
rm -f "$work/changelog/changelogs/fragments/"*
if (cd "$work/changelog" && "${tool_env[@]}" antsibull-changelog generate >/dev/null); then
  diff -u "$repo/CHANGELOG.md" "$work/changelog/CHANGELOG.md" || {
    say "FAIL: CHANGELOG.md is not what antsibull-changelog generate writes from changelogs/changelog.yaml"; status=1; }
else
  say "FAIL: antsibull-changelog generate"; status=1
fi

say "building the collection"
"${tool_env[@]}" ansible-galaxy collection build --output-path "$work" "$repo" >/dev/null
tarball=$(ls "$work"/csdl-gpu_lab-*.tar.gz)

for run in defaults v1; do
  log="$work/importer-$run.log"
  start=$SECONDS
  rc=0
  # In the temporary folder: the importer writes importer_result.json where it runs.
  (cd "$work" && "${tool_env[@]}" GALAXY_IMPORTER_CONFIG="$repo/scripts/galaxy-importer-$run.cfg" \
    python -m galaxy_importer.main "$tarball" >"$log" 2>&1) || rc=$?
  bad=$(grep -E '^(ERROR|WARNING|CRITICAL)' "$log" || true)
  for pattern in "${allowed_warnings[@]}"; do
    bad=$(printf '%s\n' "$bad" | grep -Ev "^WARNING: ($pattern)" || true)
  done
  if [[ $rc -ne 0 || -n "$bad" ]] || ! grep -q '^Importer processing completed successfully' "$log"; then
    say "FAIL ($run, $((SECONDS - start)) s, exit $rc):"
    printf '%s\n' "${bad:-$(tail -20 "$log")}" >&2
    status=1
  else
    kept=$(grep -c '^WARNING' "$log" || true)
    say "ok ($run config, $((SECONDS - start)) s; warnings kept as documented: $kept)"
  fi
done

if [[ -n "$keep" ]]; then
  mkdir -p "$keep"
  cp "$tarball" "$work"/importer-*.log "$keep/"
fi
exit $status
