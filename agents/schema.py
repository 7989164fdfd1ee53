"""drf-spectacular extension: how the output-only `instruction` of an Agent appears in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension


class PopulatedInstructionFieldExtension(OpenApiSerializerFieldExtension):
    """In responses an optional, nullable Instruction; absent from request bodies."""

    target_class = "agents.serializers.PopulatedInstructionField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> Any:
        if direction == "request":
            return None
        from agents.serializers import InstructionSerializer

        return auto_schema.resolve_serializer(InstructionSerializer, direction).ref
