"""What memsy's hosted product offers and a self-hosted engram does not: billing, the Pro plan's
interest form and connectors. Each answers with the status and code that make memsy's clients
raise their own typed error — `403 billing_not_enabled` (`BillingNotEnabledError`) and `403
feature_not_available` (`FeatureNotAvailable`) — saying why, after the key is checked.
"""

from __future__ import annotations

from typing import NoReturn

from fastapi import APIRouter, Depends

from engram.api.codec import StrictJSONRoute
from engram.api.deps import authenticated
from engram.api.errors import documented
from engram.auth import Principal
from engram.errors import ServiceError

router = APIRouter(prefix="/v1", tags=["hosted only"], route_class=StrictJSONRoute)

TIER = "self-hosted"

BILLING = ("GET /billing/summary", "GET /billing/invoices")
INTEREST = ("POST /interest/pro", "GET /interest/pro/status")
CONNECTORS = (
    "GET /connectors/providers", "GET /connectors", "POST /connectors/s3/configure",
    "GET /connectors/{provider}/status", "POST /connectors/{provider}/connect",
    "GET /connectors/{connector_id}", "DELETE /connectors/{connector_id}",
    "GET /connectors/{connector_id}/resources", "PUT /connectors/{connector_id}/resources",
    "GET /connectors/{connector_id}/branches", "GET /connectors/{connector_id}/picker-token",
    "POST /connectors/{connector_id}/sync",
)


def _no_billing(principal: Principal = Depends(authenticated)) -> NoReturn:
    raise ServiceError("billing_not_enabled", "a self-hosted engram has no billing: there are no plans, seats or "
                       "invoices (usage is counted at GET /v1/usage/summary)", extra={"current_tier": TIER})


def _not_offered(feature: str, what: str):  # type: ignore[no-untyped-def]
    def answer(principal: Principal = Depends(authenticated)) -> NoReturn:
        raise ServiceError("feature_not_available", f"a self-hosted engram has no {what}",
                           extra={"feature": feature, "current_tier": TIER, "upgrade_url": None})

    return answer


def _route(spec: str, endpoint, name: str) -> None:  # type: ignore[no-untyped-def]
    method, path = spec.split(" ", 1)
    statuses = (401, 403, 404, 422) if "{" in path else (401, 403, 422)
    router.add_api_route(path, endpoint, methods=[method], name=name, responses=documented(*statuses),
                         response_model=None, status_code=200)


for _spec in BILLING:
    _route(_spec, _no_billing, "billing " + _spec)
for _spec in INTEREST:
    _route(_spec, _not_offered("pro_interest", "Pro plan to express interest in: every feature it has is here"),
           "interest " + _spec)
for _spec in CONNECTORS:
    _route(_spec, _not_offered("connectors", "connectors: bring a source's content in through /v1/ingest or "
                               "/v1/memories"), "connectors " + _spec)
