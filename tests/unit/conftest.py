"""Shared fixtures of the unit tests."""

from __future__ import annotations

import pytest

from uq_guard.perturb.wordnet import provision_wordnet


@pytest.fixture(scope="session")
def wordnet() -> None:
    """The WordNet corpus, provisioned (instant when `uq-guard setup` already did it).

    Provisioning instead of skipping: a broken setup must fail these tests, not hide them.
    """
    provision_wordnet()
