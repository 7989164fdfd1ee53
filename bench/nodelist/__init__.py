"""The parts of bench/node_list.py (the node list at scale, service against a bare Django view):

- `dataset`: the seeded rows (organizations of skewed sizes, soft-deleted rows, statuses) and the
  measured organization;
- `servers`: the two daphne processes, the service and the bare view, per row count;
- `compare`: the checks that both run the same SQL and answer the same JSON; EXPLAIN and DB times;
- `loadgen`: the load generator (its own process) and one measured run of it;
- `report`: the table and the goals.
"""

QUERY = "limit=10&sort=-createdAt&filter[status]=online"
BENCH_PATH = "/api/nodes?limit=10&sort=-createdAt&filter%5Bstatus%5D=online"
