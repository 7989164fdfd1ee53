"""What the test modules share (test modules never import each other or conftest.py):

- `environment`: the repository root, CI mode.
- `personas`: the organizations, the persona clients (owner/editor/viewer of org A, owner of org B)
  and the service-level principals.
- `factories`: factory_boy factories for the records tests build, through the services.
- `api`: the error-body check and the REST contract mixins (per operation, and for read-only
  sub-resources).
- `live_server`: a real ASGI server in a thread (`gateway` fixture) and its HTTP client.
- `daemons`: node daemons over Socket.IO and the plain WebSocket, and the protocol's envelopes.
- `npm_daemon`: the npm `socket.io-client` daemon as a child process (`node_binary` fixture).
- `processes`: child web/Celery processes sharing the test database and Redis (`processes` fixture).
- `executions`: building blocks of execution-engine tests.
- `agent`: the node agent (aiwm_node) as a process of its own; `fake_model_server`: a stand-in
  model server that misbehaves on purpose; `fake_nvml`: a stand-in NVML with two GPUs;
  `range_server`: a local file server with ranges, throttling and failure knobs (downloads).

Modules defining fixtures are registered as plugins in tests/conftest.py.
"""
