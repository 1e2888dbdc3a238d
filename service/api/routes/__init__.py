"""REST routers: ``/v1/experiments`` and ``/healthz``."""

from service.api.routes import experiments, health

__all__ = ["experiments", "health"]
