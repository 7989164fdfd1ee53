"""The parts of bench/node_swarm.py (N simulated daemons against the gateway and an echo server):

- `clients`: the swarm's processes (the daemons: connect, register, telemetry);
- `run`: one run against one server and target (warm-up, ramp, steady window, the measurements,
  what the service wrote), its steps also bench/fleet.py's (`SwarmRun`);
- `report`: the table, the goals, the smoke mode's checks;
- `experiments_check`: `--smoke`'s check that bench/swarm_experiments.py's variants still patch
  what they mean to.
"""
