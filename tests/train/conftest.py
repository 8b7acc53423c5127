from __future__ import annotations

import pytest

from otel_lightning.train.model import tiny_qwen2
from otel_lightning.train.policy import TorchPolicy
from otel_lightning.train.policy_server import PolicyServer
from otel_lightning.train.tokenizer import ByteChatTokenizer


@pytest.fixture
def policy() -> TorchPolicy:
    tokenizer = ByteChatTokenizer()
    return TorchPolicy(tiny_qwen2(tokenizer, hidden=32, layers=1, seed=1), tokenizer)


@pytest.fixture
def policy_server(policy):
    with PolicyServer(policy) as server:
        yield server
