"""`nsfwoid serve`: the app and its lifetime (app.py, server.py), aiohttp's protocol adjusted (protocol.py), the
routes (routes.py, kserve.py, liftwing.py), intake (request → image bytes under admission), answers, and the
app's typed state (state.py)."""
