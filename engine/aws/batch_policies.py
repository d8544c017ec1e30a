"""AWS Batch's scheduling policies (fair share): Create, Describe, List, Update, DeleteSchedulingPolicy.

``fairsharePolicy`` (``shareDecaySeconds``, ``computeReservation``, ``shareDistribution`` of
``shareIdentifier`` + ``weightFactor``) maps one to one to the policy body of
``/api/v1/scheduling-policies`` (engine/batch/fairshare.py has the semantics). Tags are not kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.aws.protocol import AwsError, Body, max_results, member, next_token, page, resource_name
from engine.batch.detail import names
from engine.batch.service import BatchService

POLICY_OPERATIONS = {
    "createschedulingpolicy": "create",
    "describeschedulingpolicies": "describe",
    "listschedulingpolicies": "list",
    "updateschedulingpolicy": "update",
    "deleteschedulingpolicy": "delete",
}


def policy_body(fair: Any) -> dict[str, Any]:
    """``fairsharePolicy`` -> the Sluice body (absent members stay absent: a change leaves them)."""
    if fair is None:
        return {}
    if not isinstance(fair, Mapping):
        raise AwsError("ClientException", "fairsharePolicy must be an object")
    out: dict[str, Any] = {}
    if fair.get("shareDecaySeconds") is not None:
        out["share_decay_s"] = member(fair, "shareDecaySeconds", int)
    if fair.get("computeReservation") is not None:
        out["compute_reservation"] = member(fair, "computeReservation", int)
    if fair.get("shareDistribution") is not None:
        out["share_distribution"] = [
            {"share_identifier": d.get("shareIdentifier"), "weight_factor": d.get("weightFactor", 1.0)}
            for d in member(fair, "shareDistribution", list) or []
            if isinstance(d, Mapping)
        ]
    return out


def policy_shape(body: Mapping[str, Any]) -> dict[str, Any]:
    name = str(body["name"])
    return {
        "name": name,
        "arn": names().policy(name),
        "fairsharePolicy": {
            "shareDecaySeconds": int(body["share_decay_s"]),
            "computeReservation": body["compute_reservation"],
            "shareDistribution": [
                {"shareIdentifier": d["share_identifier"], "weightFactor": d["weight_factor"]}
                for d in body["share_distribution"]
            ],
        },
        "tags": {},
    }


class PolicyApi:
    def __init__(self, batch: BatchService) -> None:
        self.batch = batch

    async def create(self, body: Body) -> Body:
        name = member(body, "name", str, required=True)
        await self.batch.policies.put({"name": name, **policy_body(body.get("fairsharePolicy"))}, create=True)
        return {"name": name, "arn": names().policy(name)}

    async def describe(self, body: Body) -> Body:
        wanted = [
            resource_name(str(a), "scheduling-policy") for a in member(body, "arns", list, required=True)
        ]
        known = {p["name"]: p for p in self.batch.policies.list()}
        return {"schedulingPolicies": [policy_shape(known[n]) for n in wanted if n in known]}

    async def list(self, body: Body) -> Body:
        every = [p["name"] for p in self.batch.policies.list()]
        start, limit = page(body.get("nextToken")) or 0, max_results(body)
        out: Body = {"schedulingPolicies": [{"arn": names().policy(n)} for n in every[start : start + limit]]}
        if start + limit < len(every):
            out["nextToken"] = next_token(start + limit)
        return out

    async def update(self, body: Body) -> Body:
        name = resource_name(member(body, "arn", str, required=True), "scheduling-policy")
        await self.batch.policies.put(
            {"name": name, **policy_body(body.get("fairsharePolicy"))}, create=False
        )
        return {}

    async def delete(self, body: Body) -> Body:
        await self.batch.policies.delete(
            resource_name(member(body, "arn", str, required=True), "scheduling-policy")
        )
        return {}
