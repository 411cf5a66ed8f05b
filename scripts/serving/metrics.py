"""The server's Prometheus metrics (prometheus_client), on a registry of its own so two servers in
one process (the tests) do not collide."""

import prometheus_client as prom

prom.disable_created_metrics()  # no *_created series beside every counter

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
  def __init__(self):
    self.registry = r = prom.CollectorRegistry()
    self.requests = prom.Counter("strata_requests", "HTTP requests by endpoint and status code",
                                 ["endpoint", "status"], registry=r)
    self.prompt_tokens = prom.Counter("strata_prompt_tokens", "Prompt tokens read", registry=r)
    self.generation_tokens = prom.Counter("strata_generation_tokens", "Tokens generated", registry=r)
    self.time_to_first_token = prom.Histogram("strata_time_to_first_token_seconds",
                                              "From a request's arrival to its first token",
                                              buckets=_LATENCY_BUCKETS, registry=r)
    self.inter_token_latency = prom.Histogram("strata_inter_token_latency_seconds",
                                              "Between consecutive tokens of one choice",
                                              buckets=_LATENCY_BUCKETS, registry=r)
    self.queue_depth = prom.Gauge("strata_queue_depth", "Requests waiting for a decode slot", registry=r)
    self.batch_occupancy = prom.Gauge("strata_batch_occupancy", "Fraction of decode slots in use", registry=r)
    self.guardrail_interventions = prom.Counter("strata_guardrail_interventions",
                                                "Guardrail interventions by stage and kind", ["stage", "kind"],
                                                registry=r)
    self.engine_errors = prom.Counter("strata_engine_errors", "Requests failed inside the engine", registry=r)

  def exposition(self) -> bytes:
    return prom.generate_latest(self.registry)
