"""The control plane's HTTP face: the FastAPI app (:mod:`service.api.app`), its routes
(:mod:`service.api.routes`), request and response schemas, dependencies, error mapping,
connection bounds, and the server that runs it (:mod:`service.api.server`). It calls the
core (:mod:`service.core`) and never asks which backend runs a job."""
