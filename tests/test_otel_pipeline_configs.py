"""The OpenTelemetry Collector configurations in examples/otel_pipeline/ parse and name real components."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "examples" / "otel_pipeline").glob("*.yaml"))

# Component types of otelcol-contrib (its components.go), per section: the ones a pipeline like
# ours would use. A typo or a component in the wrong section fails the test.
CONTRIB_COMPONENTS = {
    "receivers": {"otlp", "jaeger", "zipkin", "kafka", "prometheus", "filelog", "hostmetrics"},
    "processors": {
        "batch",
        "memory_limiter",
        "attributes",
        "resource",
        "filter",
        "transform",
        "tail_sampling",
        "probabilistic_sampler",
        "groupbytrace",
        "k8sattributes",
        "routing",
    },
    "exporters": {"otlp", "otlphttp", "loadbalancing", "debug", "kafka", "file", "prometheus", "zipkin"},
    "extensions": {"health_check", "pprof", "zpages", "file_storage", "basicauth", "bearertokenauth"},
    "connectors": {"forward", "routing", "spanmetrics", "count"},
}
LOADBALANCING_ROUTING_KEYS = {"traceID", "service", "resource", "metric", "streamID", "attributes"}


def component_type(name: str) -> str:
    return name.split("/", 1)[0]  # `otlp/backend` is an `otlp` named `backend`


@pytest.fixture(params=CONFIGS, ids=lambda path: path.name)
def config(request) -> dict:
    return yaml.safe_load(request.param.read_text())


def test_there_are_both_configurations():
    assert {path.name for path in CONFIGS} == {"fan-out.yaml", "load-balanced.yaml"}


def test_every_component_is_a_real_one_in_its_section(config):
    for section, known in CONTRIB_COMPONENTS.items():
        for name in config.get(section) or {}:
            assert component_type(name) in known, f"{section}: {name!r} is not an otelcol-contrib {section[:-1]}"


def test_pipelines_name_only_configured_components(config):
    service = config["service"]
    for extension in service.get("extensions", []):
        assert extension in config["extensions"]
    pipelines = service["pipelines"]
    assert "traces" in pipelines
    for pipeline in pipelines.values():
        assert pipeline["receivers"] and pipeline["exporters"]
        for section in ("receivers", "processors", "exporters"):
            for name in pipeline.get(section, []):
                assert name in config[section], f"pipeline uses {name!r}, which {section} does not configure"
        if "memory_limiter" in pipeline.get("processors", []):
            assert pipeline["processors"][0] == "memory_limiter"  # the collector's docs: first


def test_load_balancing_routes_whole_rollouts_to_lightning_collectors():
    config = yaml.safe_load(CONFIGS[[p.name for p in CONFIGS].index("load-balanced.yaml")].read_text())
    loadbalancing = config["exporters"]["loadbalancing"]
    assert loadbalancing["routing_key"] in LOADBALANCING_ROUTING_KEYS
    assert loadbalancing["routing_key"] == "traceID"  # a rollout is one trace
    hostnames = loadbalancing["resolver"]["static"]["hostnames"]
    assert len(hostnames) >= 2 and all(host.endswith(":4317") for host in hostnames)
    assert "loadbalancing" in config["service"]["pipelines"]["traces"]["exporters"]


def test_fan_out_sends_every_span_to_the_backend_and_to_lightning():
    config = yaml.safe_load(CONFIGS[[p.name for p in CONFIGS].index("fan-out.yaml")].read_text())
    exporters = config["service"]["pipelines"]["traces"]["exporters"]
    assert {component_type(e) for e in exporters} == {"otlp"} and len(exporters) == 2
    assert config["exporters"]["otlp/lightning"]["endpoint"].endswith(":4317")
    assert config["exporters"]["otlp/lightning"]["retry_on_failure"]["enabled"] is True
