"""Agent and tool enumerations, used by the models, serializers, filters and admin alike."""

from django.db import models


class AgentStatus(models.TextChoices):
    ACTIVE = "active"
    INACTIVE = "inactive"
    BUSY = "busy"


class ToolType(models.TextChoices):
    API = "api"
    FUNCTION = "function"
    SERVICE = "service"


class ToolStatus(models.TextChoices):
    ACTIVE = "active"
    INACTIVE = "inactive"
    DEPRECATED = "deprecated"


class ToolParametersType(models.TextChoices):
    """`parameters.type` of a tool: the JSON Schema type of its arguments."""

    OBJECT = "object"
    ARRAY = "array"


class ToolResponseType(models.TextChoices):
    """`responseFormat.type` of a tool: the JSON type of what it returns."""

    OBJECT = "object"
    ARRAY = "array"
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
