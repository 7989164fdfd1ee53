"""The parts of bench/node_agent.py (the node agent: its downloader against curl, a kill at 50 %
and the resume, and the idle agent's CPU and memory with its telemetry running):

- `fileserver`: the local HTTP file server, a process of its own (`python -m
  bench.nodeagentbench.fileserver CONFIG`): tests/support/range_server.py's RangeServer as the
  tests use it, or the same server answering with sendfile(2) (the faster one), with its
  per-path byte counters read over a line protocol;
- `downloads`: the 1 GiB file, the timed clients (curl, the agent's downloader CLI, curl followed
  by an fsync), the interleaved rounds, and the kill at 50 % with its resume;
- `idle`: the control plane (`manage.py serve`, SQLite), the node enrolled, the real agent
  (`python -m aiwm_node run`) and its CPU and RSS sampled beside an idle baseline process;
- `report`: the tables, the goals and the checks.
"""
