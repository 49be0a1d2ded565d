#!/usr/bin/env bash
# Build benchmarks/grpcload (the Go gRPC load generator) into .cache/bin/grpcload.
# Idempotent: rebuilt only when its sources change (stamp = hash of main.go, go.mod, go.sum).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/benchmarks/grpcload"
OUT="$ROOT/.cache/bin/grpcload"
STAMP="$ROOT/.cache/bin/.grpcload.stamp"
command -v go >/dev/null || { echo "build_grpcload: Go is not installed (needed for the gRPC load generator)" >&2; exit 1; }
HASH="$(cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -c1-16)"
if [[ -x "$OUT" && -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  exit 0
fi
mkdir -p "$(dirname "$OUT")"
echo "building grpcload (Go gRPC load generator) ..." >&2
(cd "$SRC" && go build -trimpath -o "$OUT" .)
echo "$HASH" > "$STAMP"
