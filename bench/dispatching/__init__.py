"""The parts of bench/dispatch.py (execution dispatch: per-step overhead and steps/s):

- `messages`: the command, the execution shapes, a daemon's answers;
- `scenarios`: the executions created and started, a scenario's latencies;
- `topology`: one run's processes (web servers, Celery worker and beat, daemons, the completion listener);
- `daemons`: the daemons' processes (answer every command at once);
- `baselines`, `echo_apps`: the Redis and python-socketio baselines (their processes and servers);
- `trace`, `trace_report`: the instrumented service (`--trace`, `--profile`) and its breakdown;
- `checks`: what the service stored and delivered, through the database;
- `report`: the tables, the ratios, the goals.
"""
