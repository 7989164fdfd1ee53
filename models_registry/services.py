"""Model writes beyond plain CRUD (which the shared entity services handle)."""

from __future__ import annotations

from django.utils import timezone

from models_registry.choices import ModelStatus
from models_registry.models import AIModel


def model_apply_download_report(
    *, org_id: str, model_id: str, node_id: str, status: str, progress: float | None = None, path: str = ""
) -> bool:
    """Record how a node's download of the model is going: `status`, `downloadProgress`, and once
    ready `isDownloaded` and `downloadPath`. Returns whether a model changed.

    A model record describes its copy on its own node (`nodeId`): a download on another node (a
    deployment placed elsewhere) does not change it. One conditional UPDATE, no read.
    """
    if status not in ModelStatus.values:
        raise ValueError(f"unknown model status {status!r}")
    changes: dict[str, object] = {"status": status, "updated_at": timezone.now()}
    if progress is not None:
        changes["download_progress"] = max(0.0, min(100.0, float(progress)))
    if status == ModelStatus.READY:
        changes.update(is_downloaded=True, download_progress=100.0)
        if path:
            changes["download_path"] = path[:1024]
    elif status in (ModelStatus.DOWNLOADING, ModelStatus.ERROR):
        changes["is_downloaded"] = False
    rows = AIModel.objects.for_org(org_id).filter(model_id=model_id, node_id=node_id)
    return bool(rows.update(**changes))
