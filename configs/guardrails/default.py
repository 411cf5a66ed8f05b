"""A guardrails policy for scripts/serve.py --guardrails=configs/guardrails/default.py.

Prompts: personal data is redacted before the model sees it; prompts on a
denied topic get the refusal. Answers: the same, checked on the stream as it is
produced. Topics are keyword lists (whole words, any case) or regular
expressions. Every intervention is counted in /metrics
(strata_guardrail_interventions_total{stage, kind}) and logged with the request id.
"""

import ml_collections

PERSONAL_DATA = ("email", "phone", "iban", "credit_card", "ip_address", "secret", "private_key")


def get_config():
  c = ml_collections.ConfigDict()
  c.refusal = "Sorry, I can't help with that."
  c.max_prompt_tokens = 0  # 0: the model's context is the limit
  c.input = dict(pii=PERSONAL_DATA, deny=("weapons", "malware"))
  c.output = dict(pii=PERSONAL_DATA, deny=("weapons", "malware"))
  c.topics = dict(
      weapons=dict(keywords=["nerve agent", "pipe bomb", "bioweapon"],
                   patterns=[r"\b(build|make)\s+(a|an)\s+(bomb|explosive)"]),
      malware=dict(keywords=["ransomware", "keylogger"], patterns=[r"\bwrite\s+(a\s+)?virus\b"]),
  )
  return c
