"""What the Python benchmarks against TRL share: the pinned venvs they run in
(created on first use, then the calling script re-runs itself inside it)
and the SmolLM2-135M-Instruct Hugging Face directory both sides load.

Two pin sets: PINS (.venv-bench, dpo_vs_trl.py) and PPO_PINS
(.venv-bench-ppo, ppo_vs_trl.py). They differ in trl alone: trl 1.13 removed
the PPO trainer (trl.experimental.ppo), so PPO is timed with trl 1.12.0, the
last release that has it, on the same torch and transformers."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PINS = ["torch==2.15.0", "trl==1.16.0", "transformers==5.24.0", "accelerate==1.15.0", "datasets==5.2.0"]
PPO_PINS = ["torch==2.15.0", "trl==1.12.0", "transformers==5.24.0", "accelerate==1.15.0", "datasets==5.2.0"]
PPO_PROBE = "import torch, transformers, datasets; from trl.experimental.ppo import PPOTrainer"


def in_venv(venv):
    return os.path.realpath(sys.prefix) == os.path.realpath(venv)


def ensure_venv(venv, script, log, pins=PINS, probe="import torch, trl, transformers, datasets"):
    """Create and fill the venv if needed (`pins`, until `probe` imports), then re-run `script` in it
    (does not return)."""
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        log(f"creating {venv} (pip install {' '.join(pins)}; several GB, a few minutes)")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    if subprocess.run([py, "-c", probe], capture_output=True).returncode != 0:
        subprocess.run([py, "-m", "pip", "install", "-q", *pins], check=True)
    os.execv(py, [py, os.path.abspath(script), *sys.argv[1:]])


def ensure_model(bin_dir, cache):
    """cache/smollm2-hf: the GGUF from scripts/fetch-smollm2.sh, exported by ckpt_convert."""
    hf = os.path.join(cache, "smollm2-hf")
    if os.path.exists(os.path.join(hf, "model.safetensors")):
        return hf
    gguf = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch-smollm2.sh")], check=True,
                          capture_output=True, text=True, cwd=ROOT).stdout.strip()
    subprocess.run([os.path.join(bin_dir, "ckpt_convert"), os.path.join(ROOT, gguf), hf + "/"], check=True)
    return hf
