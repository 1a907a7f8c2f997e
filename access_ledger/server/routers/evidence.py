"""POST /v1/evidence (scope `audit`): the evidence bundle of a period as a zip, the one `evidence export --zip`
makes, written to a private temporary folder and streamed from there (never held in memory whole; the folder
is removed before the first byte is sent, the open file is what is streamed).

The client chooses the period and the least-privilege window only: the signing key is the service's own
($ACCESS_LEDGER_SIGNING_KEY in its environment), and the separation-of-duties rules are the shipped ones
(a rules file is a path on the service's machine). The manifest records the request and the token id
behind it, never the token. A ledger that fails verify is refused (503), as the CLI refuses it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from access_ledger.server.deps import audit_token, service
from access_ledger.server.models import Problem
from access_ledger.server.routers.stream import PatientStream
from access_ledger.server.service import Service
from ledger.errors import IntegrityFailure, ValidationError
from projections.tokens import Token

CHUNK = 1 << 20  # bytes of the zip read and sent at a time

router = APIRouter(
    prefix="/v1",
    tags=["evidence"],
    dependencies=[Depends(audit_token)],
    responses={400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}, 503: {"model": Problem}},
)


class EvidenceRequest(BaseModel):
    """The period of a bundle, as `evidence export` takes it (times as on the command line)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    from_: str | None = Field(default=None, alias="from", description="Start of the period (default: the first event).")
    to: str | None = Field(default=None, description="End of the period (default: now).")
    period: str | None = Field(default=None, description="2026, 2026-03 or 2026-Q1 (not with from/to).")
    window: str = Field(default="90d", description="Least-privilege window ending at `to`.")


@router.post(
    "/evidence",
    response_class=PatientStream,
    responses={
        200: {
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The bundle as a zip: check it with `access-ledger evidence verify FILE.zip`.",
        }
    },
)
def evidence(
    request: Annotated[EvidenceRequest | None, Body()] = None,
    token: Token = Depends(audit_token),
    svc: Service = Depends(service),
) -> PatientStream:
    """Export the evidence bundle of a period (as `evidence export --zip`) and send the zip."""
    import shlex

    from ledger.timeutil import cli_instant, parse_period
    from reports.evidence import TamperedLedger, export_bundle

    asked = request or EvidenceRequest()
    if asked.period is not None:
        if asked.from_ is not None or asked.to is not None:
            raise ValidationError("period: give period or from/to, not both")
        start, end = parse_period(asked.period)
    else:
        start = cli_instant(asked.from_, "from") if asked.from_ is not None else None
        end = cli_instant(asked.to, "to") if asked.to is not None else None
    named = (
        ["period=" + asked.period]
        if asked.period
        else (["from=" + start] if start else []) + (["to=" + end] if end else [])
    )
    if asked.window != "90d":
        named.append("window=" + asked.window)
    command = " ".join(shlex.quote(w) for w in ["POST", "/v1/evidence", *named, f"token={token.token_id}"])
    folder = Path(tempfile.mkdtemp(prefix="access-ledger-evidence-"))  # owner-only (0700)
    try:
        with svc.ledger() as led:
            try:
                result = export_bundle(
                    led,
                    folder / "evidence.zip",
                    start=start,
                    end=end,
                    as_zip=True,
                    command=command,
                    window=asked.window,
                )
            except TamperedLedger as exc:
                raise IntegrityFailure(str(exc)) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # Opened, then the folder removed: the open file is all that is left of it, so nothing stays behind on
    # disk whether the download completes, the client hangs up, or the service stops.
    try:
        handle = open(result.path, "rb")  # noqa: SIM115 - closed by the generator that sends it
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    size = os.fstat(handle.fileno()).st_size
    name = f"evidence-{result.manifest['period']['from']}-{result.manifest['period']['to']}.zip".replace(":", "")

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(CHUNK):
                yield block

    # A client that takes nothing for a minute is dropped, and the open file with it.
    return PatientStream(
        chunks(),
        media_type="application/zip",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Manifest-SHA256": result.manifest_sha256,
        },
    )
