"""The browser client (web/) and the bundled sample dialogue (media/), shipped as package data.

Found through `emostream.realtime.resources`. `make_sample.py` regenerates media/.
"""
