"""`nsfwoid score`: the run (run.py), its targets (targets.py), its output (output.py) and its progress
(progress.py)."""
