"""Test plugin (load with RLMTL_PLUGINS=rlbench_double_plugin): the RLBench backend gets the test
double's API instead of importing rlbench, in the test process and in every spawned pool worker."""

import rlbench_double as double

import rlmtl.envs.rlbench_backend as backend

API = double.make_api([])
backend.load_api = lambda: API
