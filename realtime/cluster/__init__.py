"""Serving on a Ray cluster (`emostream serve --cluster ray`): Ray Serve deployments around the
same dialogue engine the single-process server runs.

- `config.py`: the cluster's settings, from one file, with the command's flags over it.
- `models.py`: one model deployment per kind of model (ASR, end of turn, speaker embedding, text
  encoder, face path, step), each batching its calls across sessions with `@serve.batch`, and
  `RayCall`, the `emostream.realtime.calls.ModelCall` a session reaches it through.
- `ingress.py`: the ingress deployment (a FastAPI app): the page, `/ws` and `/healthz`; it holds
  the sessions (segmenter, turns, speakers, dialogue state) on its own scheduler.
- `launch.py`: starts or joins Ray, deploys the application, prints `serving http://...`.

Import this package only with the `cluster` extra installed (`pip install 'emostream[cluster]'`).
"""
