"""Instructions, Agents and Tools REST endpoints (thin: scoping, filters and writes live in services)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

from agents.models import Agent, Instruction, Tool
from agents.serializers import AgentSerializer, InstructionSerializer, ToolSerializer
from aiwm_project.api.schema import entity_schema_view
from aiwm_project.api.viewsets import DeleteResponse, EntityViewSet

OWNER_EXAMPLE = {"orgId": "68dd05b175d9e3c17bf97f60", "userId": "68dcf365f6a92c0d4911b619", "groupId": ""}
USER_ID = "68dcf365f6a92c0d4911b619"

# --- Instructions ---

INSTRUCTION_EXAMPLE_REQUEST = {
    "instructionId": "inst-cs-agent-v1",
    "name": "Customer Support Agent v1",
    "description": "Instructions for customer support AI agent",
    "systemPrompt": (
        "You are a helpful customer support agent. Always be polite, professional, and empathetic. "
        "Your goal is to resolve customer issues efficiently while maintaining a positive experience."
    ),
    "guidelines": [
        "Always greet customers warmly",
        "Listen carefully to understand the issue",
        "Provide clear step-by-step solutions",
        "Escalate complex issues to human agents",
        "End with asking if there's anything else you can help with",
    ],
    "tags": ["customer-service", "support", "polite"],
    "isActive": True,
}
INSTRUCTION_EXAMPLE = {
    "_id": "68f3d4e5f6a7b8c9d0e1f2a3",
    **INSTRUCTION_EXAMPLE_REQUEST,
    "owner": OWNER_EXAMPLE,
    "createdBy": USER_ID,
    "updatedBy": USER_ID,
    "createdAt": "2025-11-19T10:00:00.000Z",
    "updatedAt": "2025-11-19T10:00:00.000Z",
}
INSTRUCTION_UPDATE_EXAMPLE = {
    "name": "Customer Support Agent v2",
    "systemPrompt": "Updated system prompt...",
    "guidelines": ["New guideline 1", "New guideline 2"],
    "tags": ["customer-service", "support", "empathetic"],
}
IN_USE_RESPONSE = OpenApiResponse(
    description="Live agents still use the instruction; the message and `errors` name them.",
    examples=[
        OpenApiExample(
            "In use",
            value={
                "statusCode": 409,
                "message": "Instruction 'inst-cs-agent-v1' is used by 1 agent(s): agent-assistant-01; "
                "reassign or delete them before you delete it",
                "timestamp": "2025-11-19T12:00:00.000Z",
                "path": "/api/instructions/68f3d4e5f6a7b8c9d0e1f2a3",
                "correlationId": "550ecd9e-022e-4f92-8943-0a5a23eb7512",
                "errors": ["agentId: agent-assistant-01"],
            },
        )
    ],
)


@entity_schema_view(
    singular="instruction",
    example=INSTRUCTION_EXAMPLE,
    create_example=INSTRUCTION_EXAMPLE_REQUEST,
    update_example=("New version", INSTRUCTION_UPDATE_EXAMPLE),
    updated_example={**INSTRUCTION_EXAMPLE, **INSTRUCTION_UPDATE_EXAMPLE, "updatedAt": "2025-11-19T11:00:00.000Z"},
    overrides={
        "update": {"description": "`instructionId` cannot be changed (400): agents refer to the instruction by it."},
        "destroy": {
            "description": "Refused with 409 while live agents use the instruction: reassign or delete them first.",
            "responses": {200: OpenApiResponse(DeleteResponse), 409: IN_USE_RESPONSE},
            "examples": [
                OpenApiExample(
                    "Deleted",
                    value={"message": "Instruction deleted successfully", "deletedAt": "2025-11-19T12:00:00.000Z"},
                    response_only=True,
                    status_codes=["200"],
                )
            ],
        },
    },
)
class InstructionViewSet(EntityViewSet):
    model = Instruction
    serializer_class = InstructionSerializer
    filter_fields = {"isActive": "is_active", "tags": "tags", "instructionId": "instruction_id"}
    sort_fields = {
        "createdAt": "created_at",
        "updatedAt": "updated_at",
        "name": "name",
        "instructionId": "instruction_id",
    }


# --- Agents ---

AGENT_EXAMPLE_REQUEST = {
    "agentId": "agent-assistant-01",
    "name": "Customer Support Agent",
    "description": "AI agent for customer support",
    "role": "assistant",
    "status": "active",
    "capabilities": ["chat", "email", "ticketing"],
    "nodeId": "node-gpu-01",
    "instructionId": "inst-cs-agent-v1",
    "modelId": "llama-2-7b-v1",
    "toolIds": ["tool-web-search"],
    "permissions": ["read:tickets", "write:responses"],
    "tags": ["support", "customer-service"],
}
AGENT_EXAMPLE = {
    "_id": "68f2c3d4e5f6a7b8c9d0e1f2",
    **AGENT_EXAMPLE_REQUEST,
    "totalTasks": 0,
    "completedTasks": 0,
    "failedTasks": 0,
    "averageResponseTime": 0,
    "averageLatency": 0,
    "lastTask": None,
    "lastHeartbeat": None,
    "isActive": True,
    "owner": OWNER_EXAMPLE,
    "createdBy": USER_ID,
    "updatedBy": USER_ID,
    "createdAt": "2025-11-16T11:30:00.000Z",
    "updatedAt": "2025-11-16T11:30:00.000Z",
}
AGENT_UPDATE_EXAMPLE = {"status": "busy", "completedTasks": 150, "averageResponseTime": 1200}
POPULATE_PARAMETER = OpenApiParameter(
    "populate",
    OpenApiTypes.STR,
    OpenApiParameter.QUERY,
    enum=["instruction"],
    description="`instruction`: add the agent's Instruction (or null) as `instruction`. Anything else is a 400.",
)


@entity_schema_view(
    singular="agent",
    example=AGENT_EXAMPLE,
    create_example=AGENT_EXAMPLE_REQUEST,
    update_example=("Busy", AGENT_UPDATE_EXAMPLE),
    updated_example={**AGENT_EXAMPLE, **AGENT_UPDATE_EXAMPLE, "updatedAt": "2025-11-16T12:00:00.000Z"},
    overrides={
        "list": {"parameters": [POPULATE_PARAMETER]},
        "retrieve": {
            "parameters": [POPULATE_PARAMETER],
            "examples": [
                OpenApiExample(
                    "Agent with ?populate=instruction",
                    value={**AGENT_EXAMPLE, "instruction": INSTRUCTION_EXAMPLE},
                    response_only=True,
                )
            ],
        },
    },
)
class AgentViewSet(EntityViewSet):
    model = Agent
    serializer_class = AgentSerializer
    filter_fields = {
        "status": "status",
        "nodeId": "node_id",
        "role": "role",
        "instructionId": "instruction_id",
        "isActive": "is_active",
        "tags": "tags",
        "capabilities": "capabilities",
        "agentId": "agent_id",
    }
    sort_fields = {
        "createdAt": "created_at",
        "updatedAt": "updated_at",
        "name": "name",
        "agentId": "agent_id",
        "status": "status",
        "role": "role",
        "totalTasks": "total_tasks",
        "lastTask": "last_task",
        "lastHeartbeat": "last_heartbeat",
    }


# --- Tools ---

TOOL_EXAMPLE_REQUEST = {
    "toolId": "tool-web-search",
    "name": "Web Search",
    "description": "Searches the web and returns the top results",
    "type": "api",
    "category": "search",
    "provider": "google",
    "endpoint": "https://tools.example.com/search",
    "version": "1.0.0",
    "status": "active",
    "parameters": {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to search for"},
            "limit": {"type": "integer", "default": 5},
        },
        "required": ["query"],
    },
    "responseFormat": {
        "type": "array",
        "schema": {"items": {"type": "object", "properties": {"title": {"type": "string"}, "url": {"type": "string"}}}},
    },
    "tags": ["search", "web"],
    "documentation": "Returns at most `limit` results, best first.",
    "examples": [
        {
            "title": "Search for GPUs",
            "description": "A plain query",
            "arguments": {"query": "NVIDIA RTX 4090", "limit": 1},
            "expectedOutput": [{"title": "GeForce RTX 4090", "url": "https://www.nvidia.com/"}],
        }
    ],
    "isActive": True,
}
TOOL_EXAMPLE = {
    "_id": "68f4e5f6a7b8c9d0e1f2a3b4",
    **TOOL_EXAMPLE_REQUEST,
    "usage": [
        {
            "timestamp": "2025-11-20T09:00:00.000Z",
            "agentId": "agent-assistant-01",
            "arguments": {"query": "NVIDIA RTX 4090"},
            "result": [{"title": "GeForce RTX 4090", "url": "https://www.nvidia.com/"}],
            "latency": 420,
            "success": True,
        }
    ],
    "totalUsage": 1,
    "totalFailures": 0,
    "averageLatency": 420,
    "owner": OWNER_EXAMPLE,
    "createdBy": USER_ID,
    "updatedBy": USER_ID,
    "createdAt": "2025-11-20T08:00:00.000Z",
    "updatedAt": "2025-11-20T09:00:00.000Z",
}
TOOL_UPDATE_EXAMPLE = {"status": "deprecated", "isActive": False}


@entity_schema_view(
    singular="tool",
    example=TOOL_EXAMPLE,
    create_example=TOOL_EXAMPLE_REQUEST,
    created_example={**TOOL_EXAMPLE, "usage": [], "totalUsage": 0, "averageLatency": 0},
    update_example=("Deprecate", TOOL_UPDATE_EXAMPLE),
    updated_example={**TOOL_EXAMPLE, **TOOL_UPDATE_EXAMPLE, "updatedAt": "2025-11-21T10:00:00.000Z"},
    overrides={"update": {"summary": "Update tool (only the fields sent; a JSON field is replaced whole)"}},
)
class ToolViewSet(EntityViewSet):
    model = Tool
    serializer_class = ToolSerializer
    filter_fields = {
        "type": "type",
        "category": "category",
        "provider": "provider",
        "status": "status",
        "isActive": "is_active",
        "tags": "tags",
        "toolId": "tool_id",
    }
    sort_fields = {
        "createdAt": "created_at",
        "updatedAt": "updated_at",
        "name": "name",
        "toolId": "tool_id",
        "type": "type",
        "category": "category",
        "provider": "provider",
        "status": "status",
        "totalUsage": "total_usage",
        "averageLatency": "average_latency",
    }
