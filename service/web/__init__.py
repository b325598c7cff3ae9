"""The web page the daemon serves (issue 20): live view, timeline, window detail, microphones.

`server.py` runs an aiohttp application on its own thread; `live.py` fans the pipeline's windows out
to open pages over Server-Sent Events; `views.py` turns records into the JSON the page reads;
`mel_strip.py` shrinks a window's log-Mel (computed once, on the embedding path) to a small image.
The page itself is plain HTML, CSS and ES modules in `static/`: no build step, no third-party requests.

May import: store, analysis, capture, service's base modules and encoder/. Never api, announce, metrics,
cli or the daemon.
"""
