#!/usr/bin/env bash
# Validates deploy/ without a container engine or a cluster:
#   - yamllint on every YAML file,
#   - every Kubernetes manifest, and the kustomize rendering, against the Kubernetes
#     OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors),
#   - `docker compose config` on compose.yaml (the Compose binary needs no engine for it),
#   - hadolint on the Dockerfile,
#   - semantic checks (deploy/validate_checks.py): probes, selectors, relay, grace
#     periods, settings names against src/config.rs, compose dependencies, what the
#     Dockerfile copies against what Cargo.toml and src/ need,
#   - the Dockerfile's build context: the files its builder stage copies, staged alone,
#     make a manifest cargo accepts with the lockfile unchanged (`cargo fetch --locked`).
# PRORATA_DEPLOY_BUILD=1 also compiles the release binary from that staged context, the
# way the builder stage does, and checks its shared libraries are in the runtime image.
#
# Usage (from anywhere): bash deploy/validate.sh
# Tools are installed from PyPI into ${PRORATA_DEPLOY_VENV:-/tmp/prorata-deploy-venv}
# (deploy/validate-requirements.txt, pinned). Once installed, the validation tools run in
# a network namespace with no network (unshare -n, when permitted), which proves that
# none of them downloads anything at run time.
# Last line: `deploy: N passed, M failed`; the exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${PRORATA_DEPLOY_VENV:-/tmp/prorata-deploy-venv}"
# Kubernetes version whose schemas the manifests are checked against: native gRPC probes
# are GA since 1.27; kubernetes-validate 1.37.0 ships schemas for 1.25 to 1.37.
K8S_VERSION="${PRORATA_K8S_VERSION:-1.33.0}"
REQUIREMENTS=deploy/validate-requirements.txt
K8S_DIR=deploy/k8s
# yamllint: the relaxed preset, long lines allowed (comments and URLs), and warnings
# count as failures (-s).
YAMLLINT_CONFIG='{extends: relaxed, rules: {line-length: disable}}'

passed=0
failed=0
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }

# check NAME COMMAND...: passes when COMMAND exits 0; its output is shown on failure.
check() {
  local name=$1; shift
  if "$@" >"$WORK/out" 2>&1; then
    pass "$name"
  else
    fail "$name"
    sed 's/^/    /' "$WORK/out"
  fi
}

# tally COMMAND...: runs a command that prints `PASS ...` / `FAIL ...` lines and counts
# them; a non-zero exit with no FAIL line (a crash) counts as one failure.
tally() {
  local rc=0 line fails=0
  "$@" >"$WORK/tally" 2>&1 || rc=$?
  while IFS= read -r line; do
    case "$line" in
      PASS\ *) pass "${line#PASS }" ;;
      FAIL\ *) fail "${line#FAIL }"; fails=$((fails + 1)) ;;
      *) echo "    $line" ;;
    esac
  done <"$WORK/tally"
  if [ "$rc" -ne 0 ] && [ "$fails" -eq 0 ]; then
    fail "$* exited $rc"
  fi
}

echo "=== tools (${VENV})"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.prorata-deploy-requirements"
if ! cmp -s "$REQUIREMENTS" "$stamp"; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  if ! "$VENV/bin/python" -c 'import tomllib' 2>/dev/null; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'tomli>=2'
  fi
  cp "$REQUIREMENTS" "$stamp"
fi
B="$VENV/bin"
echo "kubernetes-validate $("$B/kubernetes-validate" --version) (schemas for Kubernetes ${K8S_VERSION%.*})"
echo "yamllint $("$B/yamllint" --version | awk '{print $2}')"
echo "hadolint $("$B/hadolint" --version | awk '{print $NF}')"
echo "kubectl $("$B/kubectl" version --client -o json | "$B/python" -c 'import json,sys; d=json.load(sys.stdin); print(d["clientVersion"]["gitVersion"], "kustomize", d.get("kustomizeVersion", "?"))')"
echo "docker-compose $("$B/docker-compose" version --short)"

# Run the validation tools without network when the kernel lets us make a namespace.
OFFLINE=()
if unshare -n true 2>/dev/null; then
  OFFLINE=(unshare -n)
  echo "offline: validation tools run with no network (unshare -n)"
else
  echo "offline: unshare -n not permitted here; tools run with the host network"
fi
off() { "${OFFLINE[@]}" "$@"; }

echo
echo "=== YAML (yamllint, relaxed, long lines allowed, warnings fail)"
mapfile -t yamls < <(find deploy -name '*.yaml' -o -name '*.yml' | sort)
for f in "${yamls[@]}"; do
  check "yamllint $f" off "$B/yamllint" -s -f parsable -d "$YAMLLINT_CONFIG" "$f"
done

echo
echo "=== Kubernetes manifests (kubernetes-validate --strict, Kubernetes $K8S_VERSION)"
# kubernetes-validate only warns (exit 0) about a kind it has no schema for, which is how
# a misspelt kind or apiVersion shows up: any output besides INFO lines is a failure.
k8s_validate() { # FILE ('-' reads stdin)
  local out rc=0
  out="$(off "$B/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$1" 2>&1)" || rc=$?
  if [ -n "$out" ]; then echo "$out"; fi
  [ "$rc" -eq 0 ] && [ -z "$out" ]
}
mapfile -t manifests < <(find "$K8S_DIR" -name '*.yaml' ! -name kustomization.yaml | sort)
for f in "${manifests[@]}"; do
  check "kubernetes-validate $f" k8s_validate "$f"
done
rendered="$WORK/rendered.yaml"
render() { off "$B/kubectl" kustomize "$K8S_DIR" >"$rendered"; }
check "kubectl kustomize $K8S_DIR renders" render
check "kubernetes-validate (kustomize output, $(grep -c '^kind:' "$rendered" 2>/dev/null || true) objects)" \
  k8s_validate "$rendered"
tally off "$B/python" deploy/validate_checks.py k8s "$rendered"

echo
echo "=== compose"
check "docker compose config -q deploy/compose.yaml (Compose $("$B/docker-compose" version --short))" \
  off "$B/docker-compose" -f deploy/compose.yaml config -q
# The docker CLI's own compose plugin, when this machine has one (it needs no engine).
if docker compose version >/dev/null 2>&1; then
  check "docker compose (CLI plugin) config -q deploy/compose.yaml" \
    off docker compose -f deploy/compose.yaml config -q
fi
tally off "$B/python" deploy/validate_checks.py compose

echo
echo "=== Dockerfile"
# The only rule ignored (DL3008, apt version pins) is ignored inline in the Dockerfile,
# with its reason; every other finding, down to style, fails.
check "hadolint deploy/Dockerfile" off "$B/hadolint" --no-color --failure-threshold style deploy/Dockerfile
tally off "$B/python" deploy/validate_checks.py dockerfile

echo
echo "=== Docker build context (what the builder stage copies, staged alone)"
stage="$WORK/context"
if command -v cargo >/dev/null 2>&1; then
  check "stage the builder's COPY sources" "$B/python" deploy/validate_checks.py stage "$stage"
  # Fails when a declared target's file is not copied (cargo refuses the manifest) or when
  # Cargo.lock is out of date (the image builds with --locked). May use crates.io.
  check "cargo fetch --locked in the staged context" \
    cargo fetch --locked --manifest-path "$stage/Cargo.toml"
  if [ "${PRORATA_DEPLOY_BUILD:-0}" = 1 ]; then
    target="${PRORATA_DEPLOY_TARGET:-/tmp/prorata-deploy-target}"
    check "cargo build --release --locked --bin prorata in the staged context" \
      cargo build --release --locked --bin prorata \
      --manifest-path "$stage/Cargo.toml" --target-dir "$target"
    # debian:bookworm-slim has glibc (libc, libm, ...) and libgcc_s; nothing else.
    libs_ok() {
      local bad
      bad="$(ldd "$target/release/prorata" | awk '{print $1}' \
        | grep -vE '^(linux-vdso\.so|/lib64/ld-linux|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so)' || true)"
      if [ -n "$bad" ]; then echo "not in debian:bookworm-slim: $bad"; return 1; fi
      "$target/release/prorata" --version
    }
    check "release binary needs only glibc and libgcc_s (present in bookworm-slim)" libs_ok
  fi
else
  echo "cargo not found: the staged-context checks are skipped"
fi

echo
echo "deploy: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
