#!/usr/bin/env bash
# The project's whole test run (`npm test`): installs what is missing
# (scripts/setup.sh), starts the servers (scripts/services.sh), typechecks
# every workspace package, then runs each package's vitest suite one package
# at a time and sums the counts. Ends with the line
#   N passed, N failed, N skipped
# and exits non-zero if a typecheck or a test failed, a suite crashed, or no
# test ran at all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TMP="$ROOT/.tmp"
# setup.sh leaves a pnpm shim here when it had to fall back to npx.
export PATH="$TMP/bin:$PATH"
PKG_TIMEOUT="${MTS_TEST_PACKAGE_TIMEOUT:-900}"
run_start=$SECONDS

header() { printf '\n==== %s\n' "$*"; }

header "setup"
bash scripts/setup.sh
header "services"
bash scripts/services.sh
# The URLs of the servers, unless the caller set them already.
while IFS='=' read -r key value; do
  [ -n "$key" ] || continue
  if [ -z "${!key:-}" ]; then export "$key=$value"; fi
done <"$TMP/services.env"

# Workspace packages: packages/*, examples/*, bench.
pkg_dirs=()
for dir in packages/*/ examples/*/ bench/; do
  dir=${dir%/}
  [ -f "$dir/package.json" ] && pkg_dirs+=("$dir")
done
pkg_name() { node -p "require('./$1/package.json').name"; }
has_files() { # has_files REGEX DIR...: files under the DIRs (not node_modules/dist) whose path matches
  local re=$1 d dirs=(); shift
  for d in "$@"; do [ -d "$d" ] && dirs+=("$d"); done
  [ "${#dirs[@]}" -gt 0 ] || return 1
  [ -n "$(find "${dirs[@]}" \( -name node_modules -o -name dist \) -prune -o -type f -regextype posix-extended -regex "$re" -print -quit 2>/dev/null)" ]
}
TEST_RE='.*\.(test|spec)\.[cm]?[jt]sx?$'

# ------------------------------------------------------------------ typecheck
header "typecheck"
typecheck_failed=()
for dir in "${pkg_dirs[@]}"; do
  name=$(pkg_name "$dir")
  if ! node -e "process.exit(require('./$dir/package.json').scripts?.typecheck ? 0 : 1)"; then
    continue
  fi
  # tsc fails on a package with no sources yet (TS18003): nothing to check.
  if ! has_files '.*\.[cm]?tsx?$' "$dir/src" "$dir/test"; then
    echo "typecheck $name: no TypeScript files, skipped"
    continue
  fi
  t0=$SECONDS
  if (cd "$dir" && pnpm run --silent typecheck); then
    echo "typecheck $name: ok ($((SECONDS - t0)) s)"
  else
    echo "typecheck $name: FAILED ($((SECONDS - t0)) s)"
    typecheck_failed+=("$name")
  fi
done

# ---------------------------------------------------------------------- tests
results="$TMP/test-results.tsv"   # name <tab> json file <tab> exit code <tab> seconds
: >"$results"
for dir in "${pkg_dirs[@]}"; do
  has_files "$TEST_RE" "$dir" || continue
  name=$(pkg_name "$dir")
  slug=${name#@}; slug=${slug//\//-}
  json="$TMP/vitest-$slug.json"
  rm -f "$json"
  header "test $name ($dir)"
  t0=$SECONDS
  rc=0
  (cd "$dir" && VITEST_JSON="$json" timeout --kill-after=30 "$PKG_TIMEOUT" pnpm exec vitest run) || rc=$?
  [ "$rc" = 124 ] && echo "test $name: killed after ${PKG_TIMEOUT} s (MTS_TEST_PACKAGE_TIMEOUT)"
  printf '%s\t%s\t%s\t%s\n' "$name" "$json" "$rc" "$((SECONDS - t0))" >>"$results"
done

# -------------------------------------------------------------------- summary
header "summary ($((SECONDS - run_start)) s in all)"
summary_rc=0
TYPECHECK_FAILED="${typecheck_failed[*]:-}" node - "$results" <<'EOF' || summary_rc=$?
const fs = require('node:fs');
const rows = fs.readFileSync(process.argv[2], 'utf8').split('\n').filter(Boolean).map((l) => l.split('\t'));
let passed = 0, failed = 0, skipped = 0, bad = false;
const pad = (s, n) => String(s).padEnd(n);
for (const [name, json, rcText, secs] of rows) {
  const rc = Number(rcText);
  let p = 0, f = 0, s = 0, note = '';
  let report;
  try { report = JSON.parse(fs.readFileSync(json, 'utf8')); } catch { report = undefined; }
  if (!report) {
    f = 1; note = `no vitest report (exit ${rc}): counted as 1 failure`;
  } else {
    p = report.numPassedTests ?? 0;
    f = report.numFailedTests ?? 0;
    s = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
    // A test file that failed to load has no test results of its own.
    const brokenFiles = (report.testResults ?? []).filter((r) => r.status === 'failed' && !(r.assertionResults ?? []).length).length;
    if (brokenFiles) { f += brokenFiles; note = `${brokenFiles} test file(s) failed to load`; }
    if (rc !== 0 && f === 0) { f = 1; note = `vitest exited ${rc} with no failed test: counted as 1 failure`; }
  }
  if (f > 0 || rc !== 0) bad = true;
  passed += p; failed += f; skipped += s;
  console.log(`${pad(name, 36)} ${pad(p + ' passed', 11)} ${pad(f + ' failed', 10)} ${pad(s + ' skipped', 11)} ${pad(secs + ' s', 7)} ${note}`);
}
const tc = process.env.TYPECHECK_FAILED.split(' ').filter(Boolean);
for (const name of tc) {
  console.log(`${pad(name, 36)} typecheck failed: counted as 1 failure`);
  failed += 1; bad = true;
}
if (rows.length === 0) console.log('no package has test files');
if (passed === 0) { console.log('no test passed: the run fails'); bad = true; }
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(bad ? 1 : 0);
EOF
exit "$summary_rc"
