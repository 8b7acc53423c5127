"""verl integration: `LightningAgentLoop` (verl's agent-loop extension point) feeds verl's own GRPO
with the transitions the collector builds from an unmodified agent's spans.

`otel_lightning.verl.agent_loop` needs verl (`pip install 'otel-lightning[verl]'`);
`otel_lightning.verl.outputs` (transitions → token sequences) does not.
"""
