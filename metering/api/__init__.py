"""The read API for dashboards and `metering serve` (the API, /metrics and the periodic close).

The web stack (fastapi, uvicorn) is imported only when the API is built or served.
"""

from __future__ import annotations

from metering.api.serve import Periodic, exposure_problem, port_number, run_serve, serve

__all__ = ["Periodic", "exposure_problem", "port_number", "run_serve", "serve"]
