"""The generator's bytes are fixed for a seed: split into modules by what they make, it writes what the single
module wrote (SHA-256 of the JSONL recorded from it before the split)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from access_ledger.demo.generator import generate

END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POPULATION = dict(events=30_000, users=300, tenants=12, roles=30, assignments=2_500)


@pytest.mark.parametrize(
    "shape, overrides, lines, sha256",
    [
        ("small", {}, 20_435, "13fbd007df2ec89a14f94cf0c3a58b3af7ee55cad88c77dab84410f366afdcaa"),
        ("small", {"seed": 7}, 20_417, "2ea398841781a587b5906e0282941c5a65af8417931fde32f4746c75340ece14"),
        ("large", POPULATION, 31_263, "ec39a7322bfe8cf1648bfa57a8772611028e9bc0fbc2db8bf944bed62a38ed0f"),
    ],
    ids=["acme-ml", "acme-ml-seed-7", "population"],
)
def test_the_same_seed_writes_the_same_bytes_as_before_the_split(shape, overrides, lines, sha256):
    digest, count = hashlib.sha256(), 0
    for line in generate(shape, END, **overrides).lines():
        digest.update(line + b"\n")
        count += 1
    assert (count, digest.hexdigest()) == (lines, sha256)
