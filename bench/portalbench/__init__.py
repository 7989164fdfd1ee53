"""The parts of bench/portal.py (the operator portal: the admin's dashboard and nodes changelist at
10 and 1,000 nodes, and the live events' fan-out to 1,000 subscribers):

- `seed`: the fleets in the database (nodes with 8 GPUs each, a week of one-minute metrics, the
  operator), through the ORM and one INSERT ... SELECT;
- `pages`: the admin login and the pages timed from one sequential client;
- `subscribers`: a process of SSE subscribers (`python -m bench.portalbench.subscribers CONFIG`);
- `fanout`: the subscribers' processes, a few simulated daemons heartbeating, the latencies;
- `report`: the table, the goals and the checks.
"""
