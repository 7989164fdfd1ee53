"""The parts of bench/fleet.py (a fleet of 10,000 nodes at the contract's rate, and the control
plane's lists while it reports):

- `probe`: GET /api/nodes and GET /api/deployments, one at a time, timed from the benchmark's process;
- `run`: one run (the idle service, or the fleet on N web processes) through bench.swarm.run's steps,
  with the prober in the steady window;
- `report`: the table, the goals and the checks.
"""
