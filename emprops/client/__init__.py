"""A Python client for the EmProps API (httpx only: importing it loads neither Django nor Celery).

    from emprops.client import Client
    client = Client("http://127.0.0.1:8000", api_key="ek_...")
    job = client.generate(workflow="prompt", inputs={"prompt": "a cat"}, count=2).wait()
    paths = job.download("out/")
"""

from emprops.client.client import Client, parse_sse, retry_after
from emprops.client.errors import (
    APIError,
    AuthError,
    Conflict,
    ConnectionFailed,
    InsufficientCredits,
    JobFailed,
    NotFound,
    RateLimited,
    ValidationError,
)
from emprops.client.models import FINISHED, Event, Job, Output, Quote, Workflow, WorkflowForm

__all__ = [
    "FINISHED", "APIError", "AuthError", "Client", "Conflict", "ConnectionFailed", "Event",
    "InsufficientCredits", "Job", "JobFailed", "NotFound", "Output", "Quote", "RateLimited",
    "ValidationError", "Workflow", "WorkflowForm", "parse_sse", "retry_after",
]
