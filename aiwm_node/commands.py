"""What the agent does for each command of the control plane (handlers of aiwm_node.agent)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiwm_node.agent import CommandError, CommandRun

if TYPE_CHECKING:
    from aiwm_node.agent import Agent, Handler
    from aiwm_node.download import Downloader, DownloadProgress

# How often a download reports progress on its command (it reports at least every few percent).
PROGRESS_EVERY_SECONDS = 2.0


def downloader(agent: Agent) -> Downloader:
    from aiwm_node.download import Downloader

    if "downloader" not in agent.components:
        agent.components["downloader"] = Downloader(
            agent.config.models_dir, owner=agent.agent_id, max_parallel=agent.config.max_parallel_downloads
        )
    made: Downloader = agent.components["downloader"]
    return made


async def model_download(agent: Agent, run: CommandRun) -> dict[str, Any]:
    """Fetch the model's file into the agent's models dir (or verify a local one) and report where
    it is (`downloadPath`, which the control plane records on the model)."""
    from aiwm_node.download import DownloadError

    data = run.data
    repository, file_name = data.get("repository"), data.get("fileName") or ""
    if not isinstance(repository, str) or not repository or not isinstance(file_name, str):
        raise CommandError("INVALID_COMMAND", "model.download needs data.repository (and data.fileName)")
    sha256 = data.get("sha256") if isinstance(data.get("sha256"), str) else None

    async def progress(report: DownloadProgress) -> None:
        await agent.progress(run, report.percent, downloaded=report.downloaded, total=report.total)

    try:
        result = await downloader(agent).fetch(
            model_id=run.resource_id or "model",
            repository=repository,
            file_name=file_name,
            sha256=sha256,
            progress=progress,
            cancel=run.cancel,
        )
    except DownloadError as exc:
        raise CommandError(exc.code, exc.message) from exc
    return {
        "downloadPath": str(result.path),
        "size": result.size,
        "sha256": result.sha256,
        "reused": result.reused,
        "fetchedBytes": result.fetched_bytes,
    }


async def command_cancel(agent: Agent, run: CommandRun) -> dict[str, Any]:
    """Stop working on a command the control plane withdrew; its own result then says CANCELLED."""
    original = run.data.get("originalMessageId")
    target = agent.runs.get(original) if isinstance(original, str) else None
    if target is None:
        return {"cancelled": False, "reason": "not running"}
    target.cancel.set()  # cooperative handlers (the downloader) stop at their next check
    if target.task is not None:
        target.task.cancel()
    return {"cancelled": True}


async def deployment_start(agent: Agent, run: CommandRun) -> dict[str, Any]:
    """Start the deployment's model server (idempotent: one already up is reported as it is) and
    answer once it serves: `running`, with its OpenAI-compatible endpoint."""
    from aiwm_node.supervisor import StartError

    supervisor = agent.supervisor()
    try:
        await supervisor.start(run.resource_id, run.data)
        server = await supervisor.wait_ready(run.resource_id)
    except StartError as exc:
        raise CommandError(exc.code, exc.message) from exc
    return {
        "status": "running",
        "endpoint": server.endpoint,
        "containerId": f"pid:{server.pid}",
        "backend": server.backend,
        "port": server.port,
    }


async def deployment_stop(agent: Agent, run: CommandRun) -> dict[str, Any]:
    """Stop the deployment's model server: answered once its processes are gone."""
    timeout = run.data.get("timeoutSeconds")
    graceful = run.data.get("gracefulShutdown", True) is not False
    seconds = float(timeout) if isinstance(timeout, int | float) and 0 < timeout <= 3600 else 30.0
    stopped = await agent.supervisor().stop(run.resource_id, timeout=seconds if graceful else 0.0)
    return {"status": "stopped", "wasRunning": stopped is not None}


HANDLERS: dict[str, Handler] = {
    "model.download": model_download,
    "command.cancel": command_cancel,
    "deployment.start": deployment_start,
    "deployment.stop": deployment_stop,
}
