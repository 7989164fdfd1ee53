"""Conversation and message enumerations, used by the models, serializers, filters and admin alike."""

from django.db import models


class ConversationType(models.TextChoices):
    CHAT = "chat"
    TASK = "task"
    ANALYSIS = "analysis"


class ConversationStatus(models.TextChoices):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


class MessageRole(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
