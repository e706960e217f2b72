"""The one scoring pipeline (pipeline.py): decoding in sandboxed workers (sandbox.py, decode_worker.py, imaging.py),
then the micro-batcher (batcher.py) and the model (model.py).

Nothing is imported here: a decode worker imports this package, and must stay small.
"""
