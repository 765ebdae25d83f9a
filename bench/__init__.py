"""Benchmarks and result reports. Run a script from the repository root as `python bench/NAME.py`; every script
imports the others and the results library (`bench.results`) from one root, the repository (`import bench.*`),
which the editable install (`pip install -e .`) puts on the path."""
