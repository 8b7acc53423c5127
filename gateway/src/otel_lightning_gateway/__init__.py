"""otel-lightning model gateway: an OpenAI-compatible proxy at the model server's door that records
every model call (chat completions, completions, Responses API; streamed or not) as one span with
the exact token ids the server returned, whatever the agent's language or client.

    from otel_lightning_gateway import Gateway, RolloutRoute

    gateway = Gateway(upstream="http://127.0.0.1:8000/v1").start()
    gateway.register_rollout(RolloutRoute(rollout_id="r1", task_id="t1", parent=rollout_span_context))
    # the agent: OPENAI_BASE_URL=gateway.rollout_base_url("r1")
    gateway.stop()
"""

from otel_lightning_gateway.routes import RolloutRoute
from otel_lightning_gateway.server import Gateway
from otel_lightning_gateway.version import __version__

__all__ = ["Gateway", "RolloutRoute", "__version__"]
