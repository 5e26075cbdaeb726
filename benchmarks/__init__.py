"""Side-by-side measurements of kdtune against hand-written plain-torch code (``python -m benchmarks``).

Never timed assertions in tests: ``tests/test_benchmarks.py`` only checks that a quick run completes.
"""
