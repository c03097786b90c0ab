"""exmig benchmarks (issue 8): `.venv/bin/python -m benchmarks.run`; see BENCHMARKS.md."""
