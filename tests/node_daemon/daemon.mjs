// A node daemon written from AIWM-API.md's "WebSocket Client Example (JavaScript)", with the real
// socket.io-client from npm. tests/test_gateway_npm_client.py runs it against a live server.
//
//   node daemon.mjs --url ws://127.0.0.1:3003 --token <node token>
//        [--transports websocket,polling] [--heartbeat-ms 30000] [--max-seconds 60] [--hostname gpu-server-01]
//        [--answer-commands] [--hold-commands model.download,...]
//
// (each option also reads AIWM_URL, AIWM_NODE_TOKEN, AIWM_TRANSPORTS, AIWM_HEARTBEAT_MS,
// AIWM_MAX_SECONDS, AIWM_HOSTNAME, AIWM_ANSWER_COMMANDS=1, AIWM_HOLD_COMMANDS).
//
// By default a command gets command.ack then one success command.result (the contract's example).
// --answer-commands answers like a real GPU-node daemon instead, so the execution engine can drive
// a deployment end to end (tests/test_execution_npm_client.py):
//   model.download    ack, a progress result (50), a success result {downloadPath, downloadedFiles}
//   deployment.start  ack, deployment.status running (containerId, endpoint, healthy), success result
//   deployment.stop   ack, deployment.status stopped, success result
//   command.cancel    ack
// A command whose messageId was already answered is acknowledged again but not run again (the
// server re-sends, with the same messageId, a command whose ack it did not get).
// --hold-commands lists types that are acknowledged but never finished (a download that takes
// hours), so a test can cancel them mid-step. Prints one JSON line per event to stdout:
//   {"kind": "received", "event": "<name>", "data": <payload>}   every event the server sent
//   {"kind": "sent", "event": "<name>", "data": <payload>}       every event this daemon sent
//   {"kind": "lifecycle", "event": "connect" | "connect_error" | "disconnect" | "exit", ...}
// Exits 0 on SIGTERM/SIGINT or after --max-seconds, 1 on connect_error (after printing it), 2 on bad usage.

import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { io } from 'socket.io-client';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string', default: process.env.AIWM_URL ?? 'ws://localhost:3003' },
    token: { type: 'string', default: process.env.AIWM_NODE_TOKEN ?? '' },
    transports: { type: 'string', default: process.env.AIWM_TRANSPORTS ?? 'websocket,polling' },
    'heartbeat-ms': { type: 'string', default: process.env.AIWM_HEARTBEAT_MS ?? '' },
    'max-seconds': { type: 'string', default: process.env.AIWM_MAX_SECONDS ?? '60' },
    hostname: { type: 'string', default: process.env.AIWM_HOSTNAME ?? 'gpu-server-01' },
    'answer-commands': { type: 'boolean', default: ['1', 'true'].includes(process.env.AIWM_ANSWER_COMMANDS ?? '') },
    'hold-commands': { type: 'string', default: process.env.AIWM_HOLD_COMMANDS ?? '' },
  },
});

function print(line) {
  // stdout is a pipe: on Linux, writes to pipes are synchronous, so nothing is lost on exit.
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

let exiting = false;
let heartbeatTimer;
let lifetimeTimer;
function exit(code, reason) {
  if (exiting) return;
  exiting = true;
  clearInterval(heartbeatTimer);
  clearTimeout(lifetimeTimer);
  print({ kind: 'lifecycle', event: 'exit', code, reason });
  // Hang up cleanly: the DISCONNECT packet still has to go out (a polling POST, or a frame then the
  // WebSocket close), else the server only notices at its ping timeout. Leave when nothing is
  // pending any more, or after one second at most.
  socket.disconnect();
  process.exitCode = code;
  setTimeout(() => process.exit(code), 1000).unref();
}

const maxSeconds = Number(args['max-seconds']);
const transports = args.transports.split(',').map((name) => name.trim()).filter(Boolean);
if (!args.token || !(maxSeconds > 0) || transports.length === 0) {
  process.stderr.write(
    'usage: node daemon.mjs --url URL --token TOKEN [--transports a,b] [--heartbeat-ms N] [--max-seconds N]'
      + ' [--hostname H] [--answer-commands] [--hold-commands type,type]\n',
  );
  process.exit(2);
}

function generateUUID() {
  return randomUUID();
}

function message(type, data, metadata) {
  const body = { type, messageId: generateUUID(), timestamp: new Date().toISOString(), data };
  if (metadata !== undefined) body.metadata = metadata;
  return body;
}

function emit(event, body) {
  print({ kind: 'sent', event, data: body });
  socket.emit(event, body);
}

const startedAt = Date.now();

// Connect to WebSocket (the contract's call: namespace /ws/node, auth.token, websocket then polling)
const socket = io(`${args.url}/ws/node`, {
  auth: {
    token: args.token,
  },
  transports,
});

// Every event the server sends, in order, for the test to follow.
socket.onAny((event, payload) => {
  print({ kind: 'received', event, data: payload });
});

// Connection established
socket.on('connect', () => {
  print({ kind: 'lifecycle', event: 'connect', transport: socket.io.engine.transport.name, id: socket.id });
});

// Refused (bad or revoked token) or unreachable: report it and stop, non-zero.
socket.on('connect_error', (error) => {
  print({ kind: 'lifecycle', event: 'connect_error', message: error.message, data: error.data ?? null });
  exit(1, 'connect_error');
});

// Receive connection acknowledgment
socket.on('connection.ack', () => {
  // Send registration
  emit(
    'node.register',
    message('node.register', {
      hostname: args.hostname,
      ipAddress: '10.10.0.101',
      publicIpAddress: '203.0.113.10',
      os: 'Ubuntu 22.04',
      cpuCores: 16,
      cpuModel: 'AMD EPYC 7763',
      ramTotal: 65536,
      diskTotal: 2000000,
      gpuDevices: [
        {
          deviceId: 'GPU-0',
          model: 'NVIDIA RTX 4090',
          memoryTotal: 24576,
          memoryFree: 24000,
        },
      ],
      daemonVersion: '1.0.0',
      uptimeSeconds: Math.floor(process.uptime()),
      containerRuntime: 'docker',
    }),
  );
});

// Receive registration acknowledgment
socket.on('register.ack', (ack) => {
  const controllerInfo = ack?.data?.controllerInfo ?? {};
  const interval = Number(args['heartbeat-ms']) || controllerInfo.heartbeatInterval || 30000;
  // Start sending heartbeats
  clearInterval(heartbeatTimer);
  heartbeatTimer = setInterval(() => {
    emit(
      'telemetry.heartbeat',
      message('telemetry.heartbeat', {
        status: 'online',
        uptimeSeconds: process.uptime(),
        cpuUsage: 45.5,
        ramUsage: 28000,
        activeDeployments: 2,
        gpuStatus: [{ deviceId: 'GPU-0', utilization: 80, memoryUsed: 18000, temperature: 72 }],
      }),
    );
  }, interval);
  // Commands queued while this node was away arrive with the ack: run them like live ones.
  for (const command of ack?.data?.pendingCommands ?? []) {
    if (COMMAND_TYPES.includes(command.type)) dispatch(command);
  }
});

// What each command "does" here: nothing real, just a contract-shaped result.
const HANDLERS = {
  'model.download': async (command) => ({
    downloadedFiles: 12,
    totalSize: 13476875264,
    downloadPath: command.data?.downloadPath ?? '/models/unknown',
  }),
  'deployment.start': async (command) => ({
    containerId: `container-${command.resource?.id ?? 'unknown'}`,
    endpoint: `http://10.10.0.101:${command.data?.port ?? 8080}/v1/chat`,
  }),
  'deployment.stop': async () => ({ stopped: true }),
};

function ackCommand(command) {
  emit(
    'command.ack',
    message(
      'command.ack',
      { originalMessageId: command.messageId, status: 'received', receivedAt: new Date().toISOString() },
      command.metadata,
    ),
  );
}

async function runCommand(command) {
  // Send acknowledgment
  ackCommand(command);
  // Execute command
  try {
    const result = await HANDLERS[command.type](command);
    // Send success result
    emit(
      'command.result',
      message(
        'command.result',
        { originalMessageId: command.messageId, status: 'success', progress: 100, result, error: null },
        command.metadata,
      ),
    );
  } catch (error) {
    // Send error result
    emit(
      'command.result',
      message(
        'command.result',
        {
          originalMessageId: command.messageId,
          status: 'error',
          result: null,
          error: { code: error.code ?? 'COMMAND_FAILED', message: String(error.message ?? error) },
        },
        command.metadata,
      ),
    );
  }
}

// --- --answer-commands: what a real GPU-node daemon sends back, step by step ---

const NODE_IP = '10.10.0.101'; // the ipAddress node.register reports: endpoints are on it
const answerCommands = args['answer-commands'];
const heldTypes = new Set(args['hold-commands'].split(',').map((name) => name.trim()).filter(Boolean));
const answered = new Set(); // messageIds already taken on: a re-sent command is not run twice

function resultOf(command, status, progress, result) {
  // Every field of the contract's command.result, always: the server reads `status` to tell a
  // progress report from the end of the command, and the metadata ties it to its execution step.
  emit(
    'command.result',
    message(
      'command.result',
      { originalMessageId: command.messageId, status, progress, result, error: null },
      command.metadata,
    ),
  );
}

function deploymentStatus(data) {
  // The node's own report on its container: no metadata, it is not an answer to one command.
  emit('deployment.status', message('deployment.status', data));
}

const ANSWERS = {
  'model.download': (command) => {
    const downloadPath = command.data?.downloadPath;
    resultOf(command, 'progress', 50, null);
    resultOf(command, 'success', 100, { downloadPath, downloadedFiles: 1 });
  },
  'deployment.start': (command) => {
    const deploymentId = command.resource?.id;
    const containerId = `container-${deploymentId}`;
    const endpoint = `http://${NODE_IP}:${command.data?.port}/v1/chat`;
    // The container is up before the step is reported done, as on a real node: status, then result.
    deploymentStatus({ deploymentId, status: 'running', containerId, endpoint, healthStatus: 'healthy' });
    resultOf(command, 'success', 100, { endpoint, containerId });
  },
  'deployment.stop': (command) => {
    const deploymentId = command.resource?.id;
    deploymentStatus({ deploymentId, status: 'stopped', containerId: `container-${deploymentId}` });
    resultOf(command, 'success', 100, { stopped: true });
  },
  // The server closed the cancelled command before sending this: an answer to it would be ignored,
  // so there is nothing to report. The cancel itself needs only the ack.
  'command.cancel': () => {},
};

function answer(command) {
  if (answered.has(command.messageId)) {
    ackCommand(command); // the server did not get the first ack: say it again, do not redo the work
    return;
  }
  answered.add(command.messageId);
  ackCommand(command);
  if (heldTypes.has(command.type)) return; // a job that runs for hours: acknowledged, never finished
  ANSWERS[command.type](command);
}

const COMMAND_TYPES = answerCommands ? Object.keys(ANSWERS) : Object.keys(HANDLERS);
const dispatch = answerCommands ? answer : runCommand;

// Receive commands from server
for (const type of COMMAND_TYPES) {
  socket.on(type, (command) => dispatch(command));
}

// Handle disconnect
socket.on('disconnect', (reason) => {
  clearInterval(heartbeatTimer);
  print({ kind: 'lifecycle', event: 'disconnect', reason });
});

process.on('SIGTERM', () => exit(0, 'SIGTERM'));
process.on('SIGINT', () => exit(0, 'SIGINT'));
lifetimeTimer = setTimeout(() => exit(0, 'max-seconds'), maxSeconds * 1000);
print({
  kind: 'lifecycle',
  event: 'start',
  url: `${args.url}/ws/node`,
  transports,
  pid: process.pid,
  startedAt,
  answerCommands,
  holdCommands: [...heldTypes],
});
