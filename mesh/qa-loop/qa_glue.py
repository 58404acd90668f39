"""Glue of the qa-loop mesh: answer a question, or refine an answer the judge rejected.

``payload["question"]`` in, ``payload["answer"]`` out. When the judge sent the envelope
back, ``payload["judge_feedback"]`` (and a reviewer's ``payload["review_notes"]``) hold
what was wrong, and the model is asked to improve its previous answer. With no API key
an offline stand-in answers, so the loop runs anywhere; its answers are placeholders.
"""

from __future__ import annotations

from typing import Any

from actors.judge.llm import complete, load_litellm

SYSTEM = ("You answer questions correctly, completely and concisely (at most 120 words). "
          "When given feedback on a previous answer, fix exactly what it names.")


class Answerer:
    def __init__(self, *, backend: str = "auto", model: str | None = None,
                 api_base: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0) -> None:
        if backend not in ("auto", "llm", "offline"):
            raise ValueError(f"backend must be 'auto', 'llm' or 'offline', got {backend!r}")
        from asya_agents.settings import LLMSettings

        llm = LLMSettings()
        self.model = model or llm.model
        self.api_base = api_base or llm.api_base
        self.api_key = api_key or llm.api_key
        self.backend = backend if backend != "auto" else ("llm" if self.api_key else "offline")
        self.timeout = timeout
        if self.backend == "llm":
            load_litellm()  # at startup, in one thread

    def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        question = str(payload["question"])
        feedback = [*payload.get("judge_feedback", [])]
        if payload.get("review_notes"):
            feedback.append(f"reviewer: {payload['review_notes']}")
        previous = payload.get("answer")
        if self.backend == "offline":
            text = _offline(question, previous, feedback)
        else:
            text = complete(model=self.model, messages=_messages(question, previous, feedback),
                            api_base=self.api_base, api_key=self.api_key,
                            timeout=self.timeout, json_mode=False).strip()
        drafts = [*payload.get("drafts", []), previous] if previous else []
        return {**payload, "answer": text, "drafts": drafts}


def _messages(question: str, previous: str | None,
              feedback: list[str]) -> list[dict[str, Any]]:
    user = f"Question: {question}"
    if previous and feedback:
        user += f"\n\nYour previous answer: {previous}\n\nFeedback: " + "; ".join(feedback)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _offline(question: str, previous: str | None, feedback: list[str]) -> str:
    """A placeholder that gets longer and closer to the question when told to."""
    terms = [w.strip("?.,!").lower() for w in question.split() if len(w) > 3]
    if not previous or not feedback:
        return f"{' '.join(terms[:2]).capitalize()}."
    return (f"About {', '.join(terms)}: this offline answerer only restates the question "
            f"({question}); set ASYA_LLM_API_KEY for a model's answer. "
            f"Earlier draft: {previous}")
